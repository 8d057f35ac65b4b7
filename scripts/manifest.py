# Checkpoint `manifest`: one row per video; decides the batches of every later job.
import json
from pathlib import Path

from dfpipe import runlog
from dfpipe.data import manifest
from dfpipe.io import write_parquet
from dfpipe.paths import resolve

p = snakemake.params
log = runlog.to_file(snakemake.log[0])
out_root = Path(snakemake.input.source).parent  # source.json paths are relative to its folder
src = json.loads(Path(snakemake.input.source).read_text())
table = manifest.build(
    resolve(src["dataset_root"], out_root),
    resolve(src["splits_dir"], out_root),
    p.methods,
    p.compression,
    p.videos_per_job,
    threads=snakemake.threads,
)
log(
    f"{len(table)} videos, {int((table.status != 'ok').sum())} unreadable, {table.groupby('method').batch.nunique().sum()} batches"
)
write_parquet(snakemake.output.table, table)
