# Rule `predict`: scores of one trained model on the test shards of every quality and the val shards of its own.
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
w = snakemake.wildcards
detector = experiments.build_detector({**snakemake.params.spec, "pretrained": snakemake.input.model})
device = predict.pick_device(job_setup.device)
# 2,000+ crops per model: on CPU a frozen graph (BatchNorm folded) pays for its tracing many times over
run = predict.frozen(detector) if device.type == "cpu" else None
tq = int(w.train_q)
# shards of quality q live in .../shards/q{q}/ (match the folder name: the output root may itself hold "q95")
test_shards = {
    q: [s for s in snakemake.input.test if Path(s).parent.name == f"q{q}"] for q in snakemake.params.qualities
}
# Val scores only serve to choose the threshold, which is fixed at the model's own training quality; the t-SNE
# features are those of the test split at that quality.
jobs = [("val", tq, list(snakemake.input.val))] + [("test", q, shards) for q, shards in test_shards.items()]
parts = []
for split, q, shards in jobs:
    with torch.inference_mode():
        part = predict.predict(detector, shards, device=device, features=split == "test" and q == tq, run=run)
    part.insert(0, "split", split)
    part.insert(0, "test_quality", q)
    parts.append(part)
    log(f"{split} q{q}: {len(part)} samples scored")
table = pd.concat(parts, ignore_index=True)
table.insert(0, "train_methods", w.train_methods)
table.insert(0, "train_quality", tq)
table.insert(0, "detector", w.detector)
write_parquet(snakemake.output.table, table)
