# Rule `test_source_fidelity`: PSNR, SSIM and bits per pixel of one test source's JPEGs at one quality (read from its
# shards) against the decoded original files, with each file's original encoding.
from pathlib import Path

import pandas as pd

from dfpipe import runlog
from dfpipe.evaluation import test_sources
from dfpipe.evaluation.test_sources import fidelity
from dfpipe.io import write_parquet

log = runlog.to_file(snakemake.log[0])
entry = snakemake.params.entry
quality = int(snakemake.wildcards.quality)
table = pd.read_parquet(snakemake.input.table)
root = test_sources.source_root(entry, Path(snakemake.input.table).parent)
measured = fidelity.measure_source(table, root, quality, snakemake.input.tars, threads=snakemake.threads)
write_parquet(snakemake.output.quality, measured)
log(f"{entry['name']} q{quality}: {len(measured)} images, mean PSNR {measured['psnr'].mean():.2f} dB")
