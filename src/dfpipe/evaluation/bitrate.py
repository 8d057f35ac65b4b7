"""Detectors across codecs and perturbations, compared at equal bits per pixel.

"Quality 60" means other bits in every encoder, so the test settings (`dfpipe.axes`) are put on one axis
that does not depend on the encoder: bits per pixel. Every figure here is measured on the same crops, the
test split's usable ones: AUCs on all of them, bpp, PSNR and SSIM on the frames the fidelity stage samples.

- `rate_distortion`: per setting, mean bpp, PSNR and SSIM (MozJPEG qualities included, from the fidelity
  stage's tables restricted to the test videos).
- `robustness`: AUC of every model trained on all methods on every test setting (MozJPEG qualities and the
  others), with identity-bootstrap intervals like the main tables'.
- `auc_at_bpp`: AUC interpolated at fixed bpp points, per detector and codec, linearly in log2(bpp) between
  the codec's two nearest measured levels; empty outside the range a codec was measured over (no
  extrapolation).

Only the image codecs share the bpp axis. The platform path's bpp is its re-encoded video's (whole frames,
background included, with inter-frame prediction), which is not comparable with a crop's: its rows are in
the tables with that bpp, but out of the bpp plots and the interpolation.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter

from dfpipe.axes import Setting
from dfpipe.evaluation import metrics
from dfpipe.evaluation.tables import detector_styles
from dfpipe.figures import pyplot, save_figure

MOZJPEG = "mozjpeg"
RD_COLUMNS = [
    "setting",
    "kind",
    "codec",
    "level",
    "n",
    "bpp",
    "psnr_mean",
    "psnr_std",
    "ssim_mean",
    "ssim_std",
    "encoder",
]
ROBUSTNESS_COLUMNS = [
    "detector",
    "train_quality",
    "setting",
    "kind",
    "codec",
    "level",
    "bpp",
    "n",
    "auc",
    "auc_lo",
    "auc_hi",
]


def read_tables(paths: Sequence[str | os.PathLike], columns: Sequence[str], what: str) -> pd.DataFrame:
    """The parquet tables at `paths` concatenated; raises naming the file that is unreadable or lacks one of
    `columns` (`what` says which stage writes them)."""
    tables = []
    for path in paths:
        try:
            table = pd.read_parquet(path)
        except (OSError, ValueError) as exc:  # pyarrow's errors do not name the file
            raise ValueError(f"{path}: not a readable {what} table ({exc}); delete it and rerun") from exc
        missing = [c for c in columns if c not in table.columns]
        if missing:
            raise ValueError(f"{path}: {what} table lacks columns {missing}; delete it and rerun")
        tables.append(table)
    return pd.concat(tables, ignore_index=True)


def describe(qualities: Sequence[int], settings: Sequence[Setting]) -> pd.DataFrame:
    """One row per test setting in table order (MozJPEG high to low quality, then the configured settings):
    setting, kind, codec (the codec or perturbation), level."""
    rows = [(f"q{q}", "codec", MOZJPEG, float(q)) for q in sorted(qualities, reverse=True)]
    rows += [(s.name, s.kind, s.method, float(s.level)) for s in settings]
    return pd.DataFrame(rows, columns=["setting", "kind", "codec", "level"])


def rate_distortion(
    mozjpeg_fidelity: pd.DataFrame,
    setting_fidelity: pd.DataFrame,
    test_keys: Sequence[str],
    settings: pd.DataFrame,
    mozjpeg_encoder: Callable[[int], str],
) -> pd.DataFrame:
    """`RD_COLUMNS` per setting of `settings` (`describe`). `mozjpeg_fidelity`: the fidelity stage's rows
    (with `quality`), of which the test videos' are kept; `setting_fidelity`: the test settings' rows, with
    their `encoder`; `mozjpeg_encoder(q)`: the provenance string of MozJPEG's files at quality q."""
    moz = mozjpeg_fidelity[mozjpeg_fidelity["key"].isin(set(test_keys))]
    moz = moz.assign(
        setting="q" + moz["quality"].astype(int).astype(str),
        encoder=moz["quality"].astype(int).map({q: mozjpeg_encoder(q) for q in moz["quality"].astype(int).unique()}),
    )
    cols = ["setting", "psnr", "ssim", "bpp", "encoder"]
    rows = pd.concat([moz[cols], setting_fidelity[cols]])
    g = rows.groupby("setting").agg(
        n=("psnr", "size"),
        bpp=("bpp", "mean"),
        psnr_mean=("psnr", "mean"),
        psnr_std=("psnr", "std"),
        ssim_mean=("ssim", "mean"),
        ssim_std=("ssim", "std"),
        encoder=("encoder", lambda e: "; ".join(sorted(set(e)))),  # one, unless jobs ran on other library versions
    )
    missing = sorted(set(settings["setting"]) - set(g.index))
    if missing:
        raise ValueError(f"rate_distortion: no fidelity rows for settings {missing}")
    out = settings.merge(g.reset_index(), on="setting", how="left")
    return out[RD_COLUMNS]


def _auc(part: pd.DataFrame, n_boot: int, seed: int) -> tuple[float, float, float]:
    """Frame-level AUC with every video weighing one, and its identity-bootstrap 95% interval (`metrics`)."""
    labels, scores = part["label"].to_numpy().astype(int), part["score"].to_numpy(float)
    if len(np.unique(labels)) < 2:
        return (np.nan, np.nan, np.nan)
    weights = metrics.video_weights(part["video_key"].to_numpy())
    auc = float(metrics.weighted_aucs(labels, scores, weights[None])[0])
    lo, hi = (np.nan, np.nan)
    if n_boot:
        lo, hi = metrics.bootstrap_auc_ci(
            labels,
            scores,
            n=n_boot,
            seed=seed,
            groups=metrics.identity_keys(part["video_key"]),
            weights=weights,
            stratify=False,
        )
    return auc, lo, hi


def robustness(
    mozjpeg_predictions: pd.DataFrame,
    setting_predictions: pd.DataFrame,
    rd: pd.DataFrame,
    n_boot: int = 200,
    seed: int = 0,
) -> pd.DataFrame:
    """`ROBUSTNESS_COLUMNS`: AUC of each (detector, training quality) model on each setting of `rd`.
    `mozjpeg_predictions`: the predict rule's tables (test rows of models trained on all methods are used);
    `setting_predictions`: the predict_setting rule's."""
    moz = mozjpeg_predictions[
        (mozjpeg_predictions["split"] == "test") & (mozjpeg_predictions["train_methods"] == "all")
    ]
    moz = moz.assign(setting="q" + moz["test_quality"].astype(int).astype(str))
    cols = ["detector", "train_quality", "setting", "video_key", "label", "score"]
    preds = pd.concat([moz[cols], setting_predictions[cols]], ignore_index=True)
    info = rd.set_index("setting")
    rows = []
    for (detector, train_q, setting), part in preds.groupby(["detector", "train_quality", "setting"], sort=False):
        if setting not in info.index:
            continue
        auc, lo, hi = _auc(part, n_boot, seed)
        s = info.loc[setting]
        rows.append(
            (detector, int(train_q), setting, s["kind"], s["codec"], s["level"], s["bpp"], len(part), auc, lo, hi)
        )
    out = pd.DataFrame(rows, columns=ROBUSTNESS_COLUMNS)
    order = {name: i for i, name in enumerate(rd["setting"])}
    return out.sort_values(
        ["detector", "train_quality", "setting"],
        key=lambda c: c.map(order) if c.name == "setting" else c,
        ascending=[True, False, True],
        ignore_index=True,
    )


def wide(robust: pd.DataFrame) -> pd.DataFrame:
    """The robustness matrix: one row per model, one column per test setting (table order), AUC."""
    order = list(dict.fromkeys(robust["setting"]))
    table = robust.pivot_table(index=["detector", "train_quality"], columns="setting", values="auc", sort=False)
    table = table.reindex(columns=[s for s in order if s in table.columns])
    table.columns.name = None
    return table.reset_index().sort_values(["detector", "train_quality"], ascending=[True, False], ignore_index=True)


def auc_at_bpp(robust: pd.DataFrame, points: Sequence[float]) -> pd.DataFrame:
    """AUC per model × codec at each bpp of `points` (module docstring), one column per point."""
    rated = robust[robust["kind"] == "codec"]
    rows = []
    for (detector, train_q, codec), part in rated.groupby(["detector", "train_quality", "codec"], sort=True):
        part = part.sort_values("bpp")
        x, y = np.log2(part["bpp"].to_numpy(float)), part["auc"].to_numpy(float)
        row = {"detector": detector, "train_quality": int(train_q), "codec": codec, "levels": len(part)}
        for p in points:
            inside = len(part) >= 2 and x[0] <= np.log2(p) <= x[-1]
            row[f"auc@{p:g}bpp"] = float(np.interp(np.log2(p), x, y)) if inside else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def _bpp_axis(ax) -> None:
    """A log2 bits-per-pixel axis labelled in plain numbers (0.5, 1, 2), not powers of two."""
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))


def plot_rate_distortion(rd: pd.DataFrame, path: str | os.PathLike) -> None:
    """PSNR and SSIM against bits per pixel, one line per image codec (module docstring: the platform path
    and the perturbations are in the table only)."""
    plt = pyplot()
    rated = rd[rd["kind"] == "codec"]
    styles = detector_styles(rated["codec"])  # one colour and marker per name, as the detectors get
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6), layout="constrained")
    for codec, part in rated.groupby("codec", sort=True):
        part = part.sort_values("bpp")
        for ax, col in zip(axes, ("psnr", "ssim"), strict=True):
            ax.plot(part["bpp"], part[f"{col}_mean"], label=str(codec), linewidth=1.5, markersize=5, **styles[codec])
    for ax, label in zip(axes, ("PSNR (dB)", "SSIM (luma)"), strict=True):
        _bpp_axis(ax)
        ax.set_xlabel("bits per pixel (log scale)")
        ax.set_ylabel(f"{label}, mean over test crops")
        ax.grid(alpha=0.3, which="both")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 6), title="codec", fontsize="small")
    fig.suptitle("Rate–distortion of the face crops per codec (test split)")
    save_figure(fig, path)


def plot_auc_vs_bpp(robust: pd.DataFrame, path: str | os.PathLike) -> None:
    """Each model's AUC against bits per pixel: one panel per model, one line per codec, so a reader sees
    which codec hurts detection most at the same size; dotted: chance."""
    plt = pyplot()
    rated = robust[robust["kind"] == "codec"]
    models = list(rated.groupby(["detector", "train_quality"], sort=True).groups)
    styles = detector_styles(rated["codec"])
    ncols = min(len(models), 3)
    nrows = -(-len(models) // ncols)
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(max(7.5, 3.8 * ncols + 0.6), 3.2 * nrows + 1.4),
        sharey=True,
        squeeze=False,
        layout="constrained",
    )
    for ax, (detector, train_q) in zip(axes.flat, models, strict=False):
        part = rated[(rated["detector"] == detector) & (rated["train_quality"] == train_q)]
        for codec, rows in part.groupby("codec", sort=True):
            rows = rows.sort_values("bpp")
            ax.plot(rows["bpp"], rows["auc"], label=str(codec), linewidth=1.5, markersize=5, **styles[codec])
        ax.axhline(0.5, color="grey", linestyle=":", linewidth=1)
        _bpp_axis(ax)
        ax.set_title(f"{detector} (trained at q{train_q})", fontsize="medium")
        ax.grid(alpha=0.3, which="both")
    for ax in axes.flat[len(models) :]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("frame-level AUC")
    for ax in axes[-1]:
        ax.set_xlabel("bits per pixel (log scale)")
    handles = [plt.Line2D([], [], linewidth=1.5, markersize=5, label=c, **s) for c, s in styles.items()]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 6), title="codec", fontsize="small")
    fig.suptitle("Detection against bitrate: AUC on the test split per codec")
    save_figure(fig, path)
