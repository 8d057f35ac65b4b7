# Rule `shortcuts`: results/shortcut_table.csv and .md, the AUC of cues that need no learning on every test set.
from pathlib import Path

import pandas as pd

from dfpipe import report, runlog
from dfpipe.evaluation import crossdataset, shortcuts
from dfpipe.io import write_bytes, write_csv

log = runlog.to_file(snakemake.log[0])
p = snakemake.params
boxes = shortcuts.face_box_cues(
    pd.concat(
        [
            pd.read_parquet(f, columns=["method", "video_id", "frame_index", "box", "status"])
            for f in snakemake.input.faces
        ]
    ).query("status == 'ok'")
)
sets = {
    p.dataset: shortcuts.with_sources(
        shortcuts.shard_samples(snakemake.input.main), boxes, ["method", "video_id", "frame_index"]
    )
}
for name, scan in zip(p.sources, snakemake.input.scans, strict=True):
    tars = [t for t in snakemake.input.sources if Path(t).parts[-4] == name]
    images = pd.read_parquet(scan)
    samples = shortcuts.with_sources(shortcuts.shard_samples(tars), shortcuts.source_image_cues(images), ["video_id"])
    samples["group"] = crossdataset.source_groups(samples["video_key"], crossdataset.image_identities(images))
    sets[name] = samples
table = shortcuts.shortcut_table(sets, n_boot=int(p.bootstrap), seed=int(p.seed))
write_csv(snakemake.output.csv, table)
write_bytes(snakemake.output.md, shortcuts.to_markdown(table).encode())
report.table_page(snakemake.output.csv, snakemake.output.page, "Shortcut baselines: AUC of cues that need no learning")
for row in shortcuts.flags(table).itertuples():
    log(
        f"{row.dataset} q{row.test_quality}: strongest cue {row.shortcut_cue} AUC {row.shortcut_auc:.3f}"
        + (" (flagged)" if row.shortcut else "")
    )
