# Rule `shards_setting`: the test split's WebDataset tars of one test setting.
from pathlib import Path

from dfpipe import runlog
from dfpipe.axes import Setting
from dfpipe.data import shards
from dfpipe.io import write_json

log = runlog.to_file(snakemake.log[0])
setting = Setting(**snakemake.params.setting)
out_dir = Path(snakemake.output.tars[0]).parent
counts = shards.write_split(list(snakemake.input.tables), setting, "test", len(snakemake.output.tars), out_dir)
log(str(counts))
write_json(snakemake.output.counts, counts)
