# Rule `faces`: decode the planned frames (one pass per video), detect, align and crop faces.
import json
from pathlib import Path

import pandas as pd

from dfpipe import assets, faces, runlog
from dfpipe.io import write_parquet
from dfpipe.paths import resolve

log = runlog.to_file(snakemake.log[0])
out_root = Path(snakemake.config["output_root"])
src = json.loads(Path(snakemake.input.source).read_text())
m = pd.read_parquet(snakemake.input.manifest)
w = snakemake.wildcards
videos = m[(m["method"] == w.method) & (m["batch"] == int(w.batch))]
plan = pd.read_parquet(snakemake.input.plan)
table = faces.crop_batch(
    plan, videos, resolve(src["dataset_root"], out_root), snakemake.params.settings,
    assets.face_detector_model(), threads=snakemake.threads, log=log,
)
log(f"{int((table.status == 'ok').sum())}/{len(table)} frames with a usable face")
write_parquet(snakemake.output.table, table)
