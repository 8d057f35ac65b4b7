# Rule `gradcam`: Grad-CAM grids of one trained model on the test shards of every quality, the examples picked
# from the model's predictions (no second scoring pass).
from pathlib import Path

from dfpipe import gpus, runlog
from dfpipe.evaluation import gradcam

log = runlog.to_file(snakemake.log[0])
# the job's share of the cores and its own GPU (held until this process ends)
job_setup = gpus.model_job(snakemake.threads, snakemake.params.device)
qualities = snakemake.params.qualities
# shards of quality q live in .../shards/q{q}/ (match the folder name: the output root may itself hold "q95")
test_shards = {q: [s for s in snakemake.input.test if Path(s).parent.name == f"q{q}"] for q in qualities}
written = gradcam.model_grids(
    Path(snakemake.input.model),
    test_shards,
    Path(snakemake.input.predictions),
    dict(zip(qualities, map(Path, snakemake.output.grids), strict=True)),
    int(snakemake.wildcards.train_q),
    device=job_setup.device,
)
log(f"{len(written)} Grad-CAM grids: {', '.join(map(str, written))}")
