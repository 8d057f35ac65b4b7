# Rule `fidelity_setting`: PSNR, SSIM and bits per pixel of one test setting's images against their lossless
# crops (the test rows of every faces batch), at most fidelity.frames_per_video evenly spaced frames per video.
import pandas as pd

from dfpipe import runlog
from dfpipe.data import fidelity, setting_crops
from dfpipe.io import write_parquet

log = runlog.to_file(snakemake.log[0])
faces = pd.concat([setting_crops.read_test_faces(p) for p in snakemake.input.faces], ignore_index=True)
per_video = snakemake.params.frames_per_video
table = pd.concat(
    [fidelity.measure_setting_batch(faces, pd.read_parquet(p), per_video) for p in snakemake.input.images],
    ignore_index=True,
)
log(f"{len(table)} crops measured from {len(snakemake.input.images)} tables")
write_parquet(snakemake.output.table, table)
