# Rule `quality`: PSNR, SSIM and bits per pixel of each JPEG against its lossless reference crop.
import pandas as pd

from dfpipe import quality, runlog
from dfpipe.io import write_parquet

log = runlog.to_file(snakemake.log[0])
table = quality.measure_batch(pd.read_parquet(snakemake.input.faces), pd.read_parquet(snakemake.input.jpeg))
log(f"{len(table)} crops measured")
write_parquet(snakemake.output.table, table)
