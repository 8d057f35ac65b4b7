# Rule `quality_report`: PSNR/SSIM/bpp per method × quality, as a CSV and a plot.
import pandas as pd

from dfpipe import quality, runlog
from dfpipe.io import write_csv

log = runlog.to_file(snakemake.log[0])
summary = quality.summarize(pd.read_parquet(t) for t in snakemake.input.tables)
write_csv(snakemake.output.csv, summary)
quality.plot(summary, snakemake.output.plot)
log(summary.to_string())
