# Rule `cross_detectors`: every model trained on all methods scored on one test source's test shards.
from pathlib import Path

import pandas as pd
import torch

from dfpipe import gpus, runlog
from dfpipe.evaluation import predict
from dfpipe.io import write_parquet
from dfpipe.models import experiments

log = runlog.to_file(snakemake.log[0])
# the job's share of the cores and its own GPU (held until this process ends)
job_setup = gpus.model_job(snakemake.threads, snakemake.params.device)
# shards of quality q live in .../q{q}/ (match the folder name: the output root may itself hold "q95")
test_shards = {
    q: [s for s in snakemake.input.test if Path(s).parent.name == f"q{q}"] for q in snakemake.params.qualities
}
device = predict.pick_device(job_setup.device)
parts = []
for run, model in zip(snakemake.params.runs, snakemake.input.models, strict=True):
    detector = experiments.build_detector({**run["spec"], "pretrained": model})
    graph = predict.frozen(detector) if device.type == "cpu" else None  # as in the predict rule
    for q, shards in test_shards.items():
        with torch.inference_mode():
            part = predict.predict(detector, shards, device=device, run=graph)
        part.insert(0, "test_quality", q)
        part.insert(0, "train_quality", run["train_q"])
        part.insert(0, "detector", run["detector"])
        parts.append(part)
    log(f"{run['detector']} q{run['train_q']}: scored on {snakemake.wildcards.name} at {list(test_shards)}")
write_parquet(snakemake.output.table, pd.concat(parts, ignore_index=True))
