# Rule `source`: build/download/check the dataset and record where it is.
from pathlib import Path

from dfpipe import runlog
from dfpipe.data import sources
from dfpipe.io import write_json
from dfpipe.paths import portable

p = snakemake.params
log = runlog.to_file(snakemake.log[0])
out_root = Path(snakemake.output.json).parent  # output_root: source.json lies at its top
cfg = {"source": p.source, p.source: p.settings, "dataset": p.dataset, "splits": p.splits}
# The demo build runs mediapipe, whose native INFO lines belong in the job's log, not on the terminal.
with runlog.native_output_to(log):
    info = sources.prepare(cfg, out_root)
write_json(
    snakemake.output.json,
    {
        "source": info.name,
        "dataset_root": portable(info.dataset_root, out_root),
        "splits_dir": portable(info.splits_dir, out_root),
    },
)
