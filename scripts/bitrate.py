# Rule `bitrate`: rate–distortion and AUC of every test setting (MozJPEG qualities and the configured codecs,
# platform re-encodes and perturbations) on the test crops, and AUC interpolated at fixed bits per pixel.
import pandas as pd

from dfpipe import runlog
from dfpipe.axes import Setting
from dfpipe.evaluation import bitrate, tables
from dfpipe.io import atomic_path, write_csv

log = runlog.to_file(snakemake.log[0])
inp, out, params = snakemake.input, snakemake.output, snakemake.params
manifest = pd.read_parquet(inp.manifest, columns=["key", "split"])
test_keys = manifest.loc[manifest["split"] == "test", "key"].tolist()
settings = bitrate.describe(params.qualities, [Setting(**s) for s in params.settings])
rd = bitrate.rate_distortion(
    pd.concat([pd.read_parquet(p) for p in inp.mozjpeg_fidelity], ignore_index=True),
    pd.concat([pd.read_parquet(p) for p in inp.setting_fidelity], ignore_index=True),
    test_keys,
    settings,
)
write_csv(out.rd, rd)
bitrate.plot_rate_distortion(rd, out.rd_plot)
robust = bitrate.robustness(
    pd.concat([pd.read_parquet(p) for p in inp.mozjpeg_predictions], ignore_index=True),
    pd.concat([pd.read_parquet(p) for p in inp.setting_predictions], ignore_index=True),
    rd,
    n_boot=params.bootstrap,
)
write_csv(out.robustness, robust)
with atomic_path(out.robustness_md) as tmp:
    tmp.write_text(tables.to_markdown(bitrate.wide(robust), ".3f"))
bitrate.plot_auc_vs_bpp(robust, out.auc_plot)
write_csv(out.auc_at_bpp, bitrate.auc_at_bpp(robust, params.bpp_points))
log(rd.to_string())
log(tables.to_markdown(bitrate.wide(robust), ".3f"))
