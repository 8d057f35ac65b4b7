# Rule `shard_index`: one index.json per quality with sample counts per split, shard, method and label.
import json
from pathlib import Path

from dfpipe import runlog
from dfpipe.data import shards

log = runlog.to_file(snakemake.log[0])
counts = [json.loads(Path(p).read_text()) for p in snakemake.input.counts]
shards.write_index(counts, snakemake.output.json)
log(f"index written for {len(counts)} splits")
