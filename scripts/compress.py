# Rule `compress`: every usable crop of a batch through MozJPEG cjpeg at one quality.
import pandas as pd

from dfpipe import runlog, tools
from dfpipe.data import compress
from dfpipe.io import write_parquet

log = runlog.to_file(snakemake.log[0])
faces = pd.read_parquet(snakemake.input.faces)
table = compress.compress_batch(
    faces, int(snakemake.wildcards.quality), snakemake.params.flags, tools.find_cjpeg(), threads=snakemake.threads
)
log(f"{len(table)} crops encoded; encoder: {table['encoder'].iloc[0] if len(table) else 'n/a'}")
write_parquet(snakemake.output.table, table)
