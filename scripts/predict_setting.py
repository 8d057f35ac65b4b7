# Rule `predict_setting`: scores of every model trained on all methods on the test shards of one test setting.
import pandas as pd
import torch

from dfpipe import gpus, runlog
from dfpipe.evaluation import predict
from dfpipe.io import write_parquet
from dfpipe.models import experiments

log = runlog.to_file(snakemake.log[0])
job_setup = gpus.model_job(snakemake.threads, snakemake.params.device)
device = predict.pick_device(job_setup.device)
setting = snakemake.wildcards.setting
parts = []
for run, model in zip(snakemake.params.runs, snakemake.input.models, strict=True):
    detector = experiments.build_detector({**run["spec"], "pretrained": model})
    frozen = predict.frozen(detector) if device.type == "cpu" else None
    with torch.inference_mode():
        part = predict.predict(detector, list(snakemake.input.test), device=device, run=frozen)
    part.insert(0, "setting", setting)
    part.insert(0, "train_quality", int(run["train_quality"]))
    part.insert(0, "detector", run["detector"])
    parts.append(part)
    log(f"{run['detector']} (q{run['train_quality']}): {len(part)} samples of {setting} scored")
write_parquet(snakemake.output.table, pd.concat(parts, ignore_index=True))
