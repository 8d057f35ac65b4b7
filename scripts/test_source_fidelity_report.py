# Rule `test_source_fidelity_report`: PSNR/SSIM/bpp of the test sources' images per source × method × original
# encoding × MozJPEG quality.
from pathlib import Path

import pandas as pd

from dfpipe import runlog
from dfpipe.evaluation.test_sources import fidelity
from dfpipe.io import write_csv

log = runlog.to_file(snakemake.log[0])
# .../test_sources/<name>/shards/q<Q>/quality.parquet
tables = {
    name: pd.concat(
        [pd.read_parquet(t) for t in snakemake.input.tables if Path(t).parents[2].name == name], ignore_index=True
    )
    for name in snakemake.params.sources
}
summary = fidelity.summarize_quality(tables)
write_csv(snakemake.output.csv, summary)
log(summary.to_string())
