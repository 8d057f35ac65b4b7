"""Result tables and plots from `dfpipe.evaluation.metrics.metric_table` output (and prediction tables for ROC curves).

Tables are flat (plain columns, no index) so the CSV, the markdown and the DataFrame read the same.
"""

from __future__ import annotations

import hashlib
import os
import textwrap
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from sklearn.manifold import TSNE
from sklearn.metrics import roc_auc_score, roc_curve

from dfpipe.evaluation.metrics import LEVELS, METHODS, TEST_SETS, video_weights
from dfpipe.figures import pyplot, save_figure
from dfpipe.io import atomic_path, write_csv, write_json

METHOD_SETS = [s for s in TEST_SETS if s != "all"]  # FF-DF, FF-F2F, FF-FS, FF-NT
RESULT_FILES = ["metrics.csv", "auc_table.csv", "auc_table.md", "robustness_matrix.csv", "generalization_matrix.csv"]


def _select(metrics_df: pd.DataFrame, level: str, **equal) -> pd.DataFrame:
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, not {level!r}")
    mask = metrics_df["level"] == level
    for col, value in equal.items():
        mask &= metrics_df[col] == value
    return metrics_df[mask]


def auc_table(metrics_df: pd.DataFrame, level: str = "frame", metric: str = "auc") -> pd.DataFrame:
    """The seed's Table 1: one row per detector × training quality (detectors trained on all methods), and for
    each test quality (high to low) columns "q{Q}/all", "q{Q}/FF-DF", … "q{Q}/FF-NT", "q{Q}/Avg".

    "all" is the whole test set (the seed's FF-c23/FF-c40 columns); Avg is the mean of the four method
    columns, NaN when one of them is missing, so an average over fewer methods is never passed off as Avg.
    """
    sel = _select(metrics_df, level, train_methods="all")
    wide = sel.pivot(index=["detector", "train_quality"], columns=["test_quality", "test_set"], values=metric)
    out = pd.DataFrame(index=wide.index)
    for q in sorted(sel["test_quality"].unique(), reverse=True):
        for test_set in ["all", *METHOD_SETS]:
            out[f"q{q}/{test_set}"] = wide.get((q, test_set), np.nan)
        out[f"q{q}/Avg"] = out[[f"q{q}/{s}" for s in METHOD_SETS]].mean(axis=1, skipna=False)
    out = out.reset_index().sort_values(["detector", "train_quality"], ascending=[True, False], ignore_index=True)
    return out


ACCURACY_COLUMNS = ["acc_05", "bacc_05", "f1_05", "acc_val", "bacc_val"]


def accuracy_table(metrics_df: pd.DataFrame, level: str = "frame", test_set: str = "all") -> pd.DataFrame:
    """Accuracy at 0.5 and at the validation threshold, each beside its balanced accuracy, and F1 at 0.5, on
    `test_set`: one row per detector × training quality (trained on all methods) × test quality (high to low).

    On the pooled set (4 fakes per original) plain accuracy rewards calling everything fake (0.8); balanced
    accuracy does not (0.5), so both are shown.
    """
    sel = _select(metrics_df, level, train_methods="all", test_set=test_set)
    out = sel[["detector", "train_quality", "test_quality", *ACCURACY_COLUMNS]]
    return out.sort_values(
        ["detector", "train_quality", "test_quality"], ascending=[True, False, False], ignore_index=True
    )


def robustness_matrix(metrics_df: pd.DataFrame, level: str = "frame", test_set: str = "all") -> pd.DataFrame:
    """AUC on `test_set` for training quality × test quality, wide: one row per detector × train_quality
    (trained on all methods), one column "q{Q}" per test quality (high to low)."""
    sel = _select(metrics_df, level, train_methods="all", test_set=test_set)
    wide = sel.pivot(index=["detector", "train_quality"], columns="test_quality", values="auc")
    wide = wide[sorted(wide.columns, reverse=True)]
    wide.columns = [f"q{q}" for q in wide.columns]
    out = wide.reset_index().sort_values(["detector", "train_quality"], ascending=[True, False], ignore_index=True)
    return out


def generalization_matrix(metrics_df: pd.DataFrame, level: str = "frame") -> pd.DataFrame:
    """Cross-manipulation AUC: one row per detector × train_quality × test_quality × training manipulation
    (runs trained on a subset, not "all"), one column per test set FF-DF … FF-NT; the diagonal is in-domain."""
    sel = _select(metrics_df, level)
    sel = sel[(sel["train_methods"] != "all") & sel["test_set"].isin(METHOD_SETS)]
    keys = ["detector", "train_quality", "test_quality", "train_methods"]
    wide = sel.pivot(index=keys, columns="test_set", values="auc").reindex(columns=METHOD_SETS)
    wide.columns = list(METHOD_SETS)
    out = wide.reset_index().sort_values(keys, ascending=[True, False, False, True], ignore_index=True)
    return out


def augmentation_table(
    metrics_df: pd.DataFrame, detector: str, variant: str, train_quality: int, level: str = "frame"
) -> pd.DataFrame:
    """The seed's Table 3 (the augmented-frame-rate ablation) per test quality: AUC of `variant` (trained on
    fewer frames of the augmented methods: "before") and of `detector` (every extracted frame: "after"), both
    trained on all methods at `train_quality`, per method set and on the whole test set, and the change in
    percent of the "before" AUC. One row per test quality (high to low) × test set."""
    sel = _select(metrics_df, level, train_methods="all", train_quality=train_quality)
    auc = {}
    for name in (variant, detector):
        rows = sel[sel["detector"] == name]
        if rows.empty:
            raise ValueError(
                f"augmentation table: no {level}-level metrics of {name!r} trained at q{train_quality} "
                "on all methods; its predictions are missing from the tables rule's input"
            )
        auc[name] = rows.set_index(["test_quality", "test_set"])["auc"]
    out = pd.DataFrame({"auc_before": auc[variant], "auc_after": auc[detector]}).reset_index()
    out = out[out["test_set"].isin([*METHOD_SETS, "all"])]
    out["change_pct"] = 100 * (out["auc_after"] - out["auc_before"]) / out["auc_before"]
    order = {s: i for i, s in enumerate([*METHOD_SETS, "all"])}
    out = out.sort_values(
        ["test_quality", "test_set"],
        ascending=[False, True],
        key=lambda c: c.map(order) if c.name == "test_set" else c,
        ignore_index=True,
    )
    return out[["test_quality", "test_set", "auc_before", "auc_after", "change_pct"]]


def write_augmentation_table(
    metrics_df: pd.DataFrame, out_dir: str | os.PathLike, ablation: dict, provenance: dict
) -> list[Path]:
    """augmentation_table.csv and .md (frame level) for `ablation` (experiments.frame_rate_ablation), atomic,
    each with a provenance sidecar."""
    out_dir = Path(out_dir)
    table = augmentation_table(metrics_df, ablation["detector"], ablation["variant"], ablation["quality"])
    frames = ", ".join(f"{m}: {n}" for m, n in sorted(ablation["frames_per_method"].items()))
    markdown = (
        f"## Augmented frame rate: {ablation['detector']} trained at q{ablation['quality']} on every "
        f"extracted frame (after) vs on fewer frames per video ({frames}; before)\n\n"
        f"Change in % of the AUC before.\n\n{to_markdown(table)}\n"
    )
    write_csv(out_dir / "augmentation_table.csv", table)
    with atomic_path(out_dir / "augmentation_table.md") as tmp:
        tmp.write_text(markdown + _provenance_footer(provenance))
    written = [out_dir / "augmentation_table.csv", out_dir / "augmentation_table.md"]
    for path in list(written):
        write_json(
            path.with_name(f"{path.name}.provenance.json"),
            {"file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "provenance": provenance},
        )
    return written


def to_markdown(df: pd.DataFrame, floatfmt: str = ".4f") -> str:
    """GitHub markdown table of `df` (columns as header, index dropped); NaN shows as "–"."""

    def cell(v) -> str:
        if isinstance(v, float | np.floating):
            return "–" if np.isnan(v) else format(v, floatfmt)
        return str(v).replace("|", "\\|")

    header = [cell(c) for c in df.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


# Filled markers that stay distinct at 6 pt; a second cue beside colour for overlapping lines and grey prints.
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*")
# Line styles of training qualities (high to low) where one axes holds several.
LINESTYLES = ("-", "--", "-.", ":", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3)))


def detector_styles(detectors) -> dict[str, dict]:
    """{detector: {"color": ..., "marker": ...}} for the sorted distinct `detectors`: no colour repeats within
    a figure. tab10 up to 10 detectors; tab20 up to 20 (its 10 strong hues first, then their light twins);
    beyond that evenly spaced hues. The same detector list gives the same styles in every plot."""
    names = sorted({str(d) for d in detectors})
    n = len(names)
    if n <= 10:
        colours = [matplotlib.colormaps["tab10"](i) for i in range(n)]
    elif n <= 20:
        tab20 = matplotlib.colormaps["tab20"]
        colours = [tab20(i) for i in [*range(0, 20, 2), *range(1, 20, 2)][:n]]
    else:
        colours = [matplotlib.colormaps["turbo"](x) for x in np.linspace(0.03, 0.97, n)]
    return {
        name: {"color": colour, "marker": MARKERS[i % len(MARKERS)]}
        for i, (name, colour) in enumerate(zip(names, colours, strict=True))
    }


def _fit_title(text: str, width_in: float, fontsize: float = 12.0) -> str:
    """`text` wrapped to lines that fit `width_in` inches at `fontsize` points (~0.5 em per character), so
    a narrow figure's title is not cut at both edges."""
    return textwrap.fill(text, max(20, int(width_in * 72 / (0.5 * fontsize))))


def _quality_axis(ax, qualities: list[int]) -> None:
    """Evenly spaced test qualities, high to low as the tables' columns read (on a numeric axis q10 and q15
    would sit almost on top of each other)."""
    ax.set_xticks(range(len(qualities)), [f"q{q}" for q in qualities])
    ax.set_xlim(-0.4, len(qualities) - 0.6)


def plot_auc_vs_quality(
    metrics_df: pd.DataFrame, path: str | os.PathLike, level: str = "frame", test_set: str = "all"
) -> None:
    """PNG of AUC on `test_set` against MozJPEG test quality (high to low, evenly spaced as the tables'
    columns) of the detectors trained on all methods: one panel per training quality (high to low, sharing
    the y axis), one line per detector, each detector in its own colour and marker (`detector_styles`) in
    every panel; one legend under the panels; dotted line: chance (0.5).

    Faceted by training quality rather than one axes with a line style per training quality: a full study
    trains every detector at every quality (about 40 lines in configs/ffpp-paper.yaml), more than one axes
    shows legibly, and each panel compares detectors at equal training quality, as the table's rows group
    them. Faceting by detector instead would split the comparison the plot is for (which detector holds up
    under compression) across panels. Runs trained on one manipulation belong to the generalization matrix
    and are not plotted here."""
    plt = pyplot()
    sel = _select(metrics_df, level, train_methods="all", test_set=test_set)
    if sel.empty:
        raise ValueError(
            f"plot_auc_vs_quality: no {level}-level metrics on {test_set!r} of runs trained on all methods"
        )
    styles = detector_styles(sel["detector"])
    train_qs = sorted(sel["train_quality"].unique(), reverse=True)
    test_qs = sorted(sel["test_quality"].unique(), reverse=True)
    x_of = {q: i for i, q in enumerate(test_qs)}
    ncols = min(len(train_qs), 3)
    nrows = -(-len(train_qs) // ncols)
    width = max(7.5, 0.6 + 3.8 * ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(width, 1.6 + 3.4 * nrows), sharey=True, squeeze=False, layout="constrained"
    )
    for ax, train_q in zip(axes.flat, train_qs, strict=False):
        part = sel[sel["train_quality"] == train_q]
        for detector, rows in part.groupby("detector", sort=True):
            rows = rows.sort_values("test_quality", ascending=False)
            style = styles[str(detector)]
            ax.plot(
                rows["test_quality"].map(x_of), rows["auc"], label=str(detector), linewidth=1.6, markersize=6, **style
            )
        ax.axhline(0.5, color="grey", linestyle=":", linewidth=1)
        _quality_axis(ax, test_qs)
        ax.set_title(f"trained at q{train_q}", fontsize="medium")
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(train_qs) :]:
        ax.set_visible(False)  # the grid's last row may have fewer panels
    for ax in axes[:, 0]:
        ax.set_ylabel(f"{level}-level AUC")
    for c in range(ncols):
        # the lowest visible panel of each column carries the x label
        [*_, bottom] = [axes[r, c] for r in range(nrows) if r * ncols + c < len(train_qs)]
        bottom.set_xlabel("MozJPEG test quality")
    handles = [plt.Line2D([], [], linewidth=1.6, markersize=6, label=name, **style) for name, style in styles.items()]
    handles.append(plt.Line2D([], [], color="grey", linestyle=":", linewidth=1, label="chance (0.5)"))
    # below the panels, as many columns as fit the width (~0.6 em per character of a small-font label)
    entry = 0.45 + 0.6 * 9 / 72 * max(len(h.get_label()) for h in handles)
    fig.legend(
        handles=handles,
        loc="outside lower center",
        ncols=max(1, min(len(handles), int(width // entry))),
        title="detector",
        fontsize="small",
    )
    where = "whole test set" if test_set == "all" else test_set
    title = f"{level.capitalize()}-level AUC ({where}) vs MozJPEG test quality, detectors trained on all methods"
    fig.suptitle(_fit_title(title, width))
    save_figure(fig, path)


def plot_roc(preds: pd.DataFrame, path: str | os.PathLike, test_quality: int | None = None) -> None:
    """PNG of frame-level ROC curves on the whole test set, one per detector × training quality (trained on
    all methods), at `test_quality` (may be left out when the predictions hold one test quality). Every video
    weighs the same, as in `dfpipe.evaluation.metrics`, so the AUC in the legend is the table's. Colour names the
    detector (`detector_styles`, as in the AUC plot), line style the training quality; the legend sits to
    the right of the axes, off the curves."""
    qualities = sorted(preds["test_quality"].unique())
    if test_quality is None:
        if len(qualities) != 1:
            raise ValueError(f"plot_roc: predictions hold test qualities {qualities}; pass test_quality")
        test_quality = qualities[0]
    sel = preds[(preds["test_quality"] == test_quality) & (preds["train_methods"] == "all")]
    if sel.empty:
        raise ValueError(f"plot_roc: no predictions at test quality {test_quality} from runs trained on all methods")
    plt = pyplot()
    styles = detector_styles(sel["detector"])
    train_qs = sorted(sel["train_quality"].unique(), reverse=True)
    dash = {q: LINESTYLES[i % len(LINESTYLES)] for i, q in enumerate(train_qs)}
    # tall enough for one legend row per curve (a full study plots dozens), the legend column beside the square
    curves = sel.groupby(["detector", "train_quality"])
    height = max(5.4, 0.6 + 0.19 * (curves.ngroups + 1))
    longest = max(len(f"{d} train q{q} (AUC 0.000)") for d, q in curves.groups)
    fig, ax = plt.subplots(figsize=(height + 0.6 + 0.07 * longest, height), layout="constrained")
    # legend per detector from its highest training quality down, as the line styles run
    for detector, train_q in sorted(curves.groups, key=lambda key: (str(key[0]), -key[1])):
        rows = curves.get_group((detector, train_q))
        weights = video_weights(rows["video_key"].to_numpy())
        fpr, tpr, _ = roc_curve(rows["label"], rows["score"], sample_weight=weights)
        auc = roc_auc_score(rows["label"], rows["score"], sample_weight=weights)
        ax.plot(
            fpr,
            tpr,
            color=styles[str(detector)]["color"],
            linestyle=dash[train_q],
            linewidth=1.6,
            label=f"{detector} train q{train_q} (AUC {auc:.3f})",
        )
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="chance")
    # a square plot pinned to the right of its slot: the legend, placed from the axes' right edge, then stays
    # in the room constrained layout kept for it (centred, the shrunk axes would push it off the figure)
    ax.set_aspect("equal")
    ax.set_anchor("E")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.grid(alpha=0.3)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(f"Frame-level ROC on the whole test set, MozJPEG test quality q{test_quality}", fontsize="medium")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    save_figure(fig, path)


def _tsne(features: np.ndarray, seed: int) -> tuple[np.ndarray, float]:
    """2-d t-SNE embedding of `features` (n × d) and its perplexity: 30, or (n - 1) / 3 when that is smaller
    (t-SNE needs perplexity < n, and small demo runs have few samples). Same `seed`, same embedding."""
    features = np.asarray(features, dtype=float)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"t-SNE: features must be n × d with n >= 2, got shape {features.shape}")
    n = features.shape[0]
    perplexity = min(30.0, max(1.0, (n - 1) / 3))
    # Exact gradients are cheap for a few hundred points and avoid Barnes-Hut's threaded approximation there.
    method = "exact" if n <= 500 else "barnes_hut"
    embedding = TSNE(n_components=2, perplexity=perplexity, init="pca", method=method, random_state=seed).fit_transform(
        features
    )
    return embedding, perplexity


def _scatter_methods(ax, embedding: np.ndarray, labels: np.ndarray, methods: np.ndarray) -> None:
    """Points of each method in a colour fixed by its place in METHODS (the same in every panel, whichever
    methods a panel holds): originals as dots, manipulations as crosses."""
    tab10 = matplotlib.colormaps["tab10"]
    labels, methods = np.asarray(labels), np.asarray(methods)
    for n, method in enumerate(METHODS):
        at = methods == method
        if not at.any():
            continue
        ax.scatter(
            embedding[at, 0],
            embedding[at, 1],
            s=12,
            color=tab10(n),
            marker="o" if method == "original" else "x",
            label=f"{method} ({'fake' if labels[at].any() else 'real'})",
        )
    # t-SNE coordinates carry no units; only the grouping is read
    ax.set_xticks([])
    ax.set_yticks([])


def val_aucs(val_preds: pd.DataFrame) -> pd.DataFrame:
    """Frame-level validation AUC (every video weighing the same, as in `dfpipe.evaluation.metrics`) of each detector ×
    training quality trained on all methods, on its val split at its own quality (what the predict rule scores
    there). Columns detector, train_quality, val_auc; single-class validation sets are left out."""
    sel = val_preds[
        (val_preds["split"] == "val")
        & (val_preds["train_methods"] == "all")
        & (val_preds["test_quality"] == val_preds["train_quality"])
    ]
    rows = []
    for (detector, train_q), part in sel.groupby(["detector", "train_quality"], sort=True):
        if part["label"].nunique() < 2:
            continue
        weights = video_weights(part["video_key"].to_numpy())
        rows.append((detector, int(train_q), float(roc_auc_score(part["label"], part["score"], sample_weight=weights))))
    return pd.DataFrame(rows, columns=["detector", "train_quality", "val_auc"])


def tsne_choice(val_preds: pd.DataFrame, detectors: list[str] | None = None) -> pd.DataFrame:
    """The models the t-SNE plot shows, chosen on validation data only (never on test): each of `detectors` at
    its training quality of highest validation AUC (`val_aucs`), in the given order; with `detectors` None, the
    one detector × training quality of highest validation AUC. Ties go to the higher training quality, then the
    detector name. Columns detector, train_quality, val_auc."""
    aucs = val_aucs(val_preds).sort_values(
        ["val_auc", "train_quality", "detector"], ascending=[False, False, True], ignore_index=True
    )
    if detectors is None:
        if aucs.empty:
            raise ValueError("t-SNE: no validation predictions of a model trained on all methods with both classes")
        return aucs.iloc[:1].reset_index(drop=True)
    missing = [d for d in detectors if d not in set(aucs["detector"])]
    if missing:
        raise ValueError(
            f"evaluate.tsne_detectors: no validation predictions (trained on all methods, both classes) of "
            f"{missing}; the tables rule's input holds {sorted(set(aucs['detector']))}"
        )
    return pd.concat([aucs[aucs["detector"] == d].iloc[:1] for d in detectors], ignore_index=True)


def plot_tsne_models(
    test_preds: pd.DataFrame, choice: pd.DataFrame, path: str | os.PathLike, seed: int = 0
) -> list[np.ndarray]:
    """PNG with one t-SNE panel per row of `choice` (`tsne_choice`), side by side: the penultimate features
    of that detector × training quality on the test split at its own quality (the predictions' "features"),
    coloured by method, titled with the detector, training quality and validation AUC. Returns the
    embeddings. Each panel's perplexity suits its number of samples (`_tsne`)."""
    panels = []
    for row in choice.itertuples(index=False):
        rows = test_preds[
            (test_preds["split"] == "test")
            & (test_preds["detector"] == row.detector)
            & (test_preds["train_quality"] == row.train_quality)
            & (test_preds["train_methods"] == "all")
            & (test_preds["test_quality"] == row.train_quality)
        ]
        if "features" in rows.columns:
            rows = rows[rows["features"].notna()]
        if len(rows) < 2:
            raise ValueError(
                f"t-SNE: {row.detector} trained at q{row.train_quality} has {len(rows)} test samples with "
                "features at its own quality; t-SNE needs 2 or more"
            )
        embedding, perplexity = _tsne(np.stack(rows["features"].to_numpy()), seed)
        title = f"{row.detector}, train q{row.train_quality}\nval AUC {row.val_auc:.3f} (perplexity {perplexity:.1f})"
        panels.append((embedding, rows["label"].to_numpy(), rows["method"].to_numpy(), title))
    if not panels:
        raise ValueError("t-SNE: no model chosen")
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 5.4), layout="constrained", squeeze=False)
    for ax, (embedding, labels, methods, title) in zip(axes[0], panels, strict=True):
        _scatter_methods(ax, embedding, labels, methods)
        ax.set_title(title, fontsize="medium")
    # one legend under the panels, off the points; a method missing from a panel keeps its colour elsewhere
    by_label = {}
    for ax in axes[0]:
        handles, names = ax.get_legend_handles_labels()
        by_label.update(zip(names, handles, strict=True))
    order = [label for m in METHODS for label in by_label if label.startswith(f"{m} (")]
    fig.legend(
        [by_label[label] for label in order],
        order,
        loc="outside lower center",
        ncols=min(len(order), 3 * len(panels)),
        fontsize="small",
    )
    title = "t-SNE of detector features, test split (models chosen by validation AUC)"
    fig.suptitle(_fit_title(title, fig.get_figwidth()))
    save_figure(fig, path)
    return [embedding for embedding, *_ in panels]


def _provenance_footer(provenance: dict) -> str:
    def show(value) -> str:
        if isinstance(value, dict):
            return ", ".join(f"{k}={v}" for k, v in sorted(value.items()))
        if isinstance(value, list | tuple):
            return " ".join(map(str, value)) or "(none)"
        return str(value)

    lines = "".join(f"- {key}: {show(value)}\n" for key, value in sorted(provenance.items()))
    return f"---\n\nProvenance (also in provenance.json):\n\n{lines}"


def write_results(metrics_df: pd.DataFrame, out_dir: str | os.PathLike, provenance: dict) -> list[Path]:
    """Write `RESULT_FILES` into `out_dir`, each with a sidecar `<name>.provenance.json` (the provenance and
    the file's sha256), plus `provenance.json` listing every file's sha256. Returns the paths written.

    auc_table.csv holds both levels (column `level`); auc_table.md renders them, then the accuracy table
    (`accuracy_table`, ACC beside balanced ACC) of each level, with a provenance footer.
    The matrices are frame level. Every file is written atomically.
    """
    out_dir = Path(out_dir)
    auc = pd.concat([auc_table(metrics_df, level).assign(level=level) for level in LEVELS], ignore_index=True)
    auc = auc[["level", *[c for c in auc.columns if c != "level"]]]
    markdown = "".join(
        f"## {level.capitalize()}-level AUC (trained on all methods)\n\n{to_markdown(auc_table(metrics_df, level))}\n"
        for level in LEVELS
    )
    markdown += "".join(
        f"## {level.capitalize()}-level accuracy on the whole test set (trained on all methods)\n\n"
        f"{to_markdown(accuracy_table(metrics_df, level))}\n"
        for level in LEVELS
    )
    csvs = {
        "metrics.csv": metrics_df,
        "auc_table.csv": auc,
        "robustness_matrix.csv": robustness_matrix(metrics_df),
        "generalization_matrix.csv": generalization_matrix(metrics_df),
    }
    written = []
    for name, table in csvs.items():
        write_csv(out_dir / name, table)
        written.append(out_dir / name)
    with atomic_path(out_dir / "auc_table.md") as tmp:
        tmp.write_text(markdown + _provenance_footer(provenance))
    written.append(out_dir / "auc_table.md")
    digests = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in written}
    for path in list(written):
        sidecar = path.with_name(f"{path.name}.provenance.json")
        write_json(sidecar, {"file": path.name, "sha256": digests[path.name], "provenance": provenance})
        written.append(sidecar)
    write_json(out_dir / "provenance.json", {**provenance, "files": digests})
    written.append(out_dir / "provenance.json")
    return written
