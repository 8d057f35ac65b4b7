# Rule `test_source_shards`: one test source's images through MozJPEG at one quality, into train/test shards.
from pathlib import Path

import pandas as pd

from dfpipe import runlog, tools
from dfpipe.evaluation import test_sources
from dfpipe.evaluation.test_sources import shards

log = runlog.to_file(snakemake.log[0])
entry = snakemake.params.entry
table = pd.read_parquet(snakemake.input.table)
root = test_sources.source_root(entry, Path(snakemake.input.table).parent)
index = shards.write_source_shards(
    table,
    root,
    int(snakemake.wildcards.quality),
    snakemake.params.flags,
    tools.find_cjpeg(),
    Path(snakemake.output.index).parent,
    threads=snakemake.threads,
)
log(f"{entry['name']} q{snakemake.wildcards.quality}: {index['samples']} samples, by label {index['by_label']}")
