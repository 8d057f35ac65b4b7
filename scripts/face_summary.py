# Rule `face_summary`: per-video face counts, with unreadable videos and too-few-face videos flagged.
import pandas as pd

from dfpipe import runlog
from dfpipe.data import faces
from dfpipe.io import write_csv

log = runlog.to_file(snakemake.log[0])
table = pd.concat(
    [pd.read_parquet(t, columns=["key", "frame_index", "status"]) for t in snakemake.input.tables], ignore_index=True
)
summary = faces.summarize(table, snakemake.params.min_faces)
m = pd.read_parquet(snakemake.input.manifest, columns=["key", "status", "error"])
summary = m.rename(columns={"status": "video_status"}).merge(summary, on="key", how="left")
summary["planned"] = summary["planned"].fillna(0).astype(int)
summary["ok"] = summary["ok"].fillna(0).astype(int)
summary["too_few"] = summary["too_few"].fillna(True).astype(bool)
log(f"{int(summary.too_few.sum())} of {len(summary)} videos have fewer than {snakemake.params.min_faces} usable faces")
write_csv(snakemake.output.csv, summary)
