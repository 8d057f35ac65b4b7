# Rule `train`: one detector at one training quality (and methods), resuming from last.pt after a kill.
from pathlib import Path

from dfpipe import gpus, runlog
from dfpipe.models import train

runlog.to_file(snakemake.log[0])  # train and checkpoint log through their module loggers
p = snakemake.params
# the job's share of the cores and its own GPUs (held until this process ends)
job_setup = gpus.model_job(snakemake.threads, p.device, p.gpus)
job = {
    "spec": p.spec,
    "settings": p.settings,
    "methods": snakemake.wildcards.train_methods,
    "train": list(snakemake.input.train),
    "val": list(snakemake.input.val),
    "out_dir": str(Path(snakemake.output.best).parent),
    "device": job_setup.device,
}
train.launch(job, p.gpus)
