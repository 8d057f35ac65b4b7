"""The quality stage: how much each JPEG crop lost against its lossless reference (PSNR, SSIM, bits per pixel)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import cv2
import matplotlib
import numpy as np
import pandas as pd
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from dfpipe.data import codecs
from dfpipe.data.compress import decode_rgb
from dfpipe.figures import pyplot, save_figure

QUALITY_COLUMNS = ["key", "method", "frame_index", "quality", "psnr", "ssim", "bpp"]
SUMMARY_COLUMNS = ["method", "quality", "n", "psnr_mean", "psnr_std", "ssim_mean", "ssim_std", "bpp_mean"]


def measure(reference: np.ndarray, jpeg: bytes, name: str = "image") -> tuple[float, float, float]:
    """(PSNR dB, SSIM, bits per pixel) of `jpeg` against the RGB `reference` it was encoded from.

    PSNR is over all RGB values. SSIM is computed as Wang et al. (2004) define it, on luma with an 11×11
    Gaussian window (sigma 1.5), the convention of JPEG quality studies; it is also 2× faster than colour SSIM.
    """
    psnr, ssim = compare(reference, decode_rgb(jpeg, name, "jpeg"), name, "JPEG")
    h, w = reference.shape[:2]
    return psnr, ssim, 8.0 * len(jpeg) / (h * w)


def compare(reference: np.ndarray, decoded: np.ndarray, name: str = "image", what: str = "image") -> tuple[float, float]:
    """(PSNR dB, SSIM) of a decoded RGB image against its RGB reference (`measure` says how)."""
    if decoded.shape != reference.shape:
        raise ValueError(f"{name}: {what} decodes to {decoded.shape}, reference crop is {reference.shape}")
    psnr = peak_signal_noise_ratio(reference, decoded, data_range=255)
    ssim = structural_similarity(
        _luma(reference), _luma(decoded), data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )
    return float(psnr), float(ssim)


def _luma(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma (the Y that JPEG itself encodes)."""
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2YCrCb)[..., 0]


def sample_frames(jpeg: pd.DataFrame, frames_per_video: int | None) -> pd.DataFrame:
    """At most `frames_per_video` evenly spaced rows of each video key (by frame_index, first and last
    included), in the table's order; every row when None. A video's crops are the same at every quality, so
    every quality measures the same frames."""
    if frames_per_video is None or jpeg.empty:
        return jpeg
    ordered = jpeg.reset_index(drop=True).sort_values(["key", "frame_index"], kind="stable")  # index: row positions
    keep = [
        rows.index[np.unique(np.round(np.linspace(0, len(rows) - 1, frames_per_video)).astype(int))]
        for _, rows in ordered.groupby("key", sort=False)
    ]
    return jpeg.iloc[np.sort(np.concatenate(keep))]


def _with_references(faces: pd.DataFrame, table: pd.DataFrame, frames_per_video: int | None, label):
    """The rows of `sample_frames(table)`, each with the decoded lossless crop (crop_png in `faces`) it was made
    from and its name for errors (`label(row)` ends it)."""
    refs = faces[faces["status"] == "ok"].set_index(["key", "frame_index"])["crop_png"]
    if not refs.index.is_unique:
        raise ValueError("faces table has duplicate (key, frame_index) rows")
    for rec in sample_frames(table, frames_per_video).itertuples(index=False):
        name = f"{rec.key} frame {rec.frame_index} {label(rec)}"
        try:
            png = refs.loc[(rec.key, rec.frame_index)]
        except KeyError:
            raise ValueError(f"{name}: no ok crop in the faces table for this row") from None
        yield rec, decode_rgb(png, name), name


def measure_batch(faces: pd.DataFrame, jpeg: pd.DataFrame, frames_per_video: int | None = None) -> pd.DataFrame:
    """The quality table of one batch: the jpeg rows of `sample_frames` measured against their crop_png in
    `faces`."""
    rows = []
    for rec, reference, name in _with_references(faces, jpeg, frames_per_video, lambda r: f"q{r.quality}"):
        psnr, ssim, bpp = measure(reference, rec.jpeg, name)
        rows.append((rec.key, rec.method, rec.frame_index, int(rec.quality), psnr, ssim, bpp))
    out = pd.DataFrame(rows, columns=QUALITY_COLUMNS)
    return out.astype(
        {"frame_index": "int64", "quality": "int64", "psnr": "float64", "ssim": "float64", "bpp": "float64"}
    )


SETTING_FIDELITY_COLUMNS = ["key", "method", "frame_index", "setting", "psnr", "ssim", "bpp", "encoder"]


def measure_setting_batch(
    faces: pd.DataFrame, table: pd.DataFrame, frames_per_video: int | None = None
) -> pd.DataFrame:
    """PSNR/SSIM of a test setting's images (`dfpipe.data.setting_crops`) against their lossless crops, on the
    frames `sample_frames` picks; bits per pixel and encoder as the setting recorded them (bpp NaN for perturbations)."""
    rows = []
    for rec, reference, name in _with_references(faces, table, frames_per_video, lambda r: r.setting):
        psnr, ssim = compare(reference, codecs.decode(rec.image, name), name)
        rows.append((rec.key, rec.method, rec.frame_index, rec.setting, psnr, ssim, float(rec.bpp), rec.encoder))
    out = pd.DataFrame(rows, columns=SETTING_FIDELITY_COLUMNS)
    return out.astype({"frame_index": "int64", "psnr": "float64", "ssim": "float64", "bpp": "float64"})


def summarize(tables: Iterable[pd.DataFrame], keys: Sequence[str] = ("method",)) -> pd.DataFrame:
    """Per `keys` (method by default) × quality: n, PSNR and SSIM mean/std, mean bits per pixel (quality high
    to low)."""
    keys = list(keys)
    frames = [t[[*keys, *QUALITY_COLUMNS[3:]]] for t in tables]
    columns = [*keys, *SUMMARY_COLUMNS[1:]]
    if not frames:
        return pd.DataFrame(columns=columns)
    allq = pd.concat(frames, ignore_index=True)
    g = allq.groupby([*keys, "quality"], sort=True, dropna=False)
    out = g.agg(
        n=("psnr", "size"),
        psnr_mean=("psnr", "mean"),
        psnr_std=("psnr", "std"),
        ssim_mean=("ssim", "mean"),
        ssim_std=("ssim", "std"),
        bpp_mean=("bpp", "mean"),
    ).reset_index()
    return out.sort_values([*keys, "quality"], ascending=[True] * len(keys) + [False], ignore_index=True)[columns]


def plot(summary: pd.DataFrame, path: str | Path) -> None:
    """PNG of PSNR and SSIM (mean ± std) against MozJPEG quality, one line per method.

    Qualities are evenly spaced and run high to low, as the tables' columns do. The methods' curves nearly
    coincide (compression affects every method alike), so each method also has its own marker and is shifted
    a little sideways, keeping every line and error bar in sight; the legend sits below both panels."""
    plt = pyplot()
    qualities = sorted(summary["quality"].unique(), reverse=True)
    x_of = {q: i for i, q in enumerate(qualities)}
    # originals first, then the manipulations by name: METHODS' order, so colours match the t-SNE plot's
    methods = sorted(summary["method"].unique(), key=lambda m: (m != "original", str(m)))
    markers = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*")
    tab10 = matplotlib.colormaps["tab10"]
    shift = 0.08 if len(methods) > 1 else 0.0
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6), layout="constrained")
    for n, method in enumerate(methods):
        rows = summary[summary["method"] == method].sort_values("quality", ascending=False)
        x = rows["quality"].map(x_of) + shift * (n - (len(methods) - 1) / 2)
        for ax, col in zip(axes, ("psnr", "ssim"), strict=True):
            ax.errorbar(
                x,
                rows[f"{col}_mean"],
                yerr=rows[f"{col}_std"].fillna(0),
                color=tab10(n % 10),
                marker=markers[n % len(markers)],
                markersize=5,
                linewidth=1.4,
                capsize=2.5,
                label=str(method),
            )
    for ax, label in zip(axes, ("PSNR (dB)", "SSIM (luma)"), strict=True):
        ax.set_xticks(range(len(qualities)), [f"q{q}" for q in qualities])
        ax.set_xlabel("MozJPEG quality")
        ax.set_ylabel(label)
        ax.set_title(f"{label.split()[0]}, mean ± std over crops", fontsize="medium")
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 6), title="method", fontsize="small")
    fig.suptitle("Face crops after MozJPEG: fidelity to the lossless crop against quality")
    save_figure(fig, path)
