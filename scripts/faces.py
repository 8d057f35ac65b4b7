# Rule `faces`: plan evenly spaced frames, decode them (one pass per video), detect, align and crop faces.
import json
from pathlib import Path

import pandas as pd

from dfpipe import assets, runlog
from dfpipe.data import faces, frames
from dfpipe.io import write_parquet
from dfpipe.paths import resolve

log = runlog.to_file(snakemake.log[0])
out_root = Path(snakemake.input.source).parent  # source.json paths are relative to its folder
src = json.loads(Path(snakemake.input.source).read_text())
m = pd.read_parquet(snakemake.input.manifest)
w = snakemake.wildcards
videos = m[(m["method"] == w.method) & (m["batch"] == int(w.batch))]
plan = frames.plan_batch(videos, snakemake.params.frames_per_video, {})
table = faces.crop_batch(
    plan,
    videos,
    resolve(src["dataset_root"], out_root),
    snakemake.params.settings,
    assets.face_detector_model(),
    threads=snakemake.threads,
)
log(f"{len(videos)} videos, {len(plan)} frames planned, {int((table.status == 'ok').sum())} with a usable face")
write_parquet(snakemake.output.table, table)
