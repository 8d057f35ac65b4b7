# Rule `frames`: plan the evenly spaced frames of each video of one batch.
import pandas as pd

from dfpipe import frames, runlog
from dfpipe.io import write_parquet

log = runlog.to_file(snakemake.log[0])
m = pd.read_parquet(snakemake.input.manifest)
w = snakemake.wildcards
videos = m[(m["method"] == w.method) & (m["batch"] == int(w.batch))]
plan = frames.plan_batch(videos, snakemake.params.per_video, {})
log(f"{len(videos)} videos, {len(plan)} frames planned")
write_parquet(snakemake.output.plan, plan)
