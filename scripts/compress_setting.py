# Rule `compress_setting`: the test split's usable crops of one method under one test setting (dfpipe.axes).
import json
from pathlib import Path

import pandas as pd

from dfpipe import runlog
from dfpipe.axes import Setting
from dfpipe.data import setting_crops
from dfpipe.io import write_parquet
from dfpipe.paths import resolve

log = runlog.to_file(snakemake.log[0])
setting = Setting(**snakemake.params.setting)
# the test rows of each batch only: the other splits' crops are never read into memory
faces = pd.concat([setting_crops.read_test_faces(p) for p in snakemake.input.faces], ignore_index=True)
videos = root = None
if setting.kind == "video":  # the platform path re-encodes the method's test videos
    m = pd.read_parquet(snakemake.input.manifest)
    videos = m[(m["method"] == snakemake.wildcards.method) & (m["split"] == "test")]
    src = json.loads(Path(snakemake.input.source).read_text())
    root = resolve(src["dataset_root"], Path(snakemake.input.source).parent)
table = setting_crops.setting_batch(faces, setting, snakemake.threads, videos, root, snakemake.params.faces)
log(f"{len(table)} test crops under {setting.name}; encoder: {table['encoder'].iloc[0] if len(table) else 'n/a'}")
write_parquet(snakemake.output.table, table)
