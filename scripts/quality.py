# Rule `quality`: PSNR, SSIM and bits per pixel of each JPEG of one method × quality against its lossless
# reference crop, batch by batch (the two input lists are in the same batch order).
import pandas as pd

from dfpipe import quality, runlog
from dfpipe.io import write_parquet

log = runlog.to_file(snakemake.log[0])
pairs = list(zip(snakemake.input.faces, snakemake.input.jpeg, strict=True))
table = pd.concat(
    [quality.measure_batch(pd.read_parquet(faces), pd.read_parquet(jpeg)) for faces, jpeg in pairs], ignore_index=True
)
log(f"{len(table)} crops measured from {len(pairs)} batches")
write_parquet(snakemake.output.table, table)
