# Rule `bitrate`: rate–distortion and AUC of every test setting (MozJPEG qualities and the configured codecs,
# platform re-encodes and perturbations) on the test crops, and AUC interpolated at fixed bits per pixel.
import pandas as pd

from dfpipe import runlog, tools
from dfpipe.axes import Setting
from dfpipe.data import compress
from dfpipe.evaluation import bitrate, metrics, tables
from dfpipe.io import atomic_path, write_csv

log = runlog.to_file(snakemake.log[0])
inp, out, params = snakemake.input, snakemake.output, snakemake.params
manifest = pd.read_parquet(inp.manifest, columns=["key", "split"])
test_keys = manifest.loc[manifest["split"] == "test", "key"].tolist()
settings = bitrate.describe(params.qualities, [Setting(**s) for s in params.settings])
fidelity_cols = ["setting", "psnr", "ssim", "bpp", "encoder"]
rd = bitrate.rate_distortion(
    bitrate.read_tables(inp.mozjpeg_fidelity, ["key", "quality", "psnr", "ssim", "bpp"], "fidelity"),
    bitrate.read_tables(inp.setting_fidelity, fidelity_cols, "test-setting fidelity"),
    test_keys,
    settings,
    lambda q: compress.encoder_id(tools.find_cjpeg(), q, params.cjpeg_flags),
)
write_csv(out.rd, rd)
bitrate.plot_rate_distortion(rd, out.rd_plot)
robust = bitrate.robustness(
    metrics.read_predictions(inp.mozjpeg_predictions),  # checked, errors name the file
    bitrate.read_tables(
        inp.setting_predictions,
        ["detector", "train_quality", "video_key", "label", "score", "setting"],
        "test-setting prediction",
    ),
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
