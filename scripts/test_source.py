# Rule `test_source`: one test source's image table (a GAN-face set or the face crops of an FF++ tree are built
# first, under its output folder).
from pathlib import Path

from dfpipe import runlog
from dfpipe.evaluation import test_sources
from dfpipe.evaluation.test_sources import images

log = runlog.to_file(snakemake.log[0])
entry = snakemake.params.entry
# The GAN-face build runs mediapipe, whose native INFO lines belong in the job's log, not on the terminal.
with runlog.native_output_to(log):
    result = test_sources.scan_source(
        entry, Path(snakemake.output.table).parent, snakemake.params.settings, threads=snakemake.threads
    )
images.write_scan(result, Path(snakemake.output.table), Path(snakemake.output.report))
log(f"{entry['name']}: {len(result.table)} images, {len(result.skipped)} skipped, {len(result.left_out)} left out")
