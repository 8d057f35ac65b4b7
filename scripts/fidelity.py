# Rule `quality`: PSNR, SSIM and bits per pixel of each JPEG of one method × quality against its lossless
# reference crop, batch by batch (the two input lists are in the same batch order); at most
# fidelity.frames_per_video evenly spaced frames of each video (null: all).
import pandas as pd

from dfpipe import runlog
from dfpipe.data import fidelity
from dfpipe.io import write_parquet

log = runlog.to_file(snakemake.log[0])
per_video = snakemake.params.frames_per_video
pairs = list(zip(snakemake.input.faces, snakemake.input.jpeg, strict=True))
tables, n_crops = [], 0
for faces, jpeg in pairs:
    jpeg = pd.read_parquet(jpeg)
    n_crops += len(jpeg)
    tables.append(fidelity.measure_batch(pd.read_parquet(faces), jpeg, per_video))
table = pd.concat(tables, ignore_index=True)
sample = "every frame" if per_video is None else f"at most {per_video} frames"
log(f"{len(table)} of {n_crops} crops measured ({sample} per video) from {len(pairs)} batches")
write_parquet(snakemake.output.table, table)
