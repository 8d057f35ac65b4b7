# Rules `shards_<split>`: the fixed set of WebDataset tars of one split at one quality.
from pathlib import Path

from dfpipe import runlog
from dfpipe.data import shards
from dfpipe.io import write_json

log = runlog.to_file(snakemake.log[0])
out_dir = Path(snakemake.output.tars[0]).parent
counts = shards.write_split(
    list(snakemake.input.tables),
    int(snakemake.wildcards.quality),
    snakemake.params.split,
    len(snakemake.output.tars),
    out_dir,
)
log(str(counts))
write_json(snakemake.output.counts, counts)
