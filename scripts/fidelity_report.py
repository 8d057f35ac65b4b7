# Rule `fidelity_report`: PSNR/SSIM/bpp per method × quality, as a CSV and a plot.
import pandas as pd

from dfpipe import runlog
from dfpipe.data import fidelity
from dfpipe.io import write_csv

log = runlog.to_file(snakemake.log[0])
summary = fidelity.summarize(pd.read_parquet(t) for t in snakemake.input.tables)
write_csv(snakemake.output.csv, summary)
fidelity.plot(summary, snakemake.output.plot)
log(summary.to_string())
