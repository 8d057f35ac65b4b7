# Rule `quality`: PSNR, SSIM and bits per pixel of each JPEG of one method × quality against its lossless
# reference crop, batch by batch (the two input lists are in the same batch order).
from concurrent.futures import ThreadPoolExecutor

import pandas as pd

from dfpipe import quality, runlog
from dfpipe.io import write_parquet

log = runlog.to_file(snakemake.log[0])
pairs = list(zip(snakemake.input.faces, snakemake.input.jpeg, strict=True))
with ThreadPoolExecutor(snakemake.threads) as pool:
    parts = list(pool.map(lambda p: quality.measure_batch(pd.read_parquet(p[0]), pd.read_parquet(p[1])), pairs))
table = pd.concat(parts, ignore_index=True)
log(f"{len(table)} crops measured from {len(pairs)} batches")
write_parquet(snakemake.output.table, table)
