# Rule `train`: one detector at one training quality (and methods), resuming from last.pt after a kill.
from pathlib import Path

import torch

from dfpipe import experiments, gpus, runlog

runlog.to_file(snakemake.log[0])  # train and experiments log through their module loggers
# torch takes every core of the host by default: with Snakemake running jobs side by side that oversubscribes
# the cores; the rule's `threads` is this job's share
torch.set_num_threads(snakemake.threads)
p = snakemake.params
# Jobs running side by side on one machine each get their own GPUs (held until this process ends).
gpu_claim = gpus.claim(p.gpus, device=p.device)
job = {
    "spec": p.spec,
    "settings": p.settings,
    "methods": snakemake.wildcards.train_methods,
    "train": list(snakemake.input.train),
    "val": list(snakemake.input.val),
    "out_dir": str(Path(snakemake.output.best).parent),
    "device": p.device,
}
experiments.launch(job, p.gpus)
