"""Result tables and plots from `dfpipe.metrics.evaluate` output (and prediction tables for ROC curves).

Tables are flat (plain columns, no index) so the CSV, the markdown and the DataFrame read the same.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.manifold import TSNE
from sklearn.metrics import roc_auc_score, roc_curve

from .io import atomic_path, write_csv, write_json
from .metrics import LEVELS, METHODS, TEST_SETS, video_weights

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


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display on workers
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)  # the temp name ends in .part, so name the format
    _pyplot().close(fig)


def plot_auc_vs_quality(
    metrics_df: pd.DataFrame, path: str | os.PathLike, level: str = "frame", test_set: str = "all"
) -> None:
    """PNG of AUC on `test_set` against test quality, one line per detector (and training quality when a
    detector was trained at several)."""
    plt = _pyplot()
    sel = _select(metrics_df, level, train_methods="all", test_set=test_set)
    several = sel.groupby("detector")["train_quality"].nunique().gt(1)
    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    for (detector, train_q), rows in sel.sort_values("test_quality").groupby(["detector", "train_quality"]):
        label = f"{detector} (train q{train_q})" if several[detector] else str(detector)
        ax.plot(rows["test_quality"], rows["auc"], marker="o", label=label)
    ax.set_xlabel("MozJPEG test quality")
    ax.set_ylabel(f"{level}-level AUC ({test_set})")
    ax.grid(alpha=0.3)
    ax.legend(title="detector", fontsize="small")
    _save(fig, path)


def plot_roc(preds: pd.DataFrame, path: str | os.PathLike, test_quality: int | None = None) -> None:
    """PNG of frame-level ROC curves on the whole test set, one per detector × training quality (trained on
    all methods), at `test_quality` (may be left out when the predictions hold one test quality). Every video
    weighs the same, as in `dfpipe.metrics`, so the AUC in the legend is the table's."""
    qualities = sorted(preds["test_quality"].unique())
    if test_quality is None:
        if len(qualities) != 1:
            raise ValueError(f"plot_roc: predictions hold test qualities {qualities}; pass test_quality")
        test_quality = qualities[0]
    sel = preds[(preds["test_quality"] == test_quality) & (preds["train_methods"] == "all")]
    if sel.empty:
        raise ValueError(f"plot_roc: no predictions at test quality {test_quality} from runs trained on all methods")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5), constrained_layout=True)
    for (detector, train_q), rows in sel.groupby(["detector", "train_quality"]):
        weights = video_weights(rows["video_key"].to_numpy())
        fpr, tpr, _ = roc_curve(rows["label"], rows["score"], sample_weight=weights)
        auc = roc_auc_score(rows["label"], rows["score"], sample_weight=weights)
        ax.plot(fpr, tpr, label=f"{detector} train q{train_q} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(f"ROC, test quality q{test_quality}")
    ax.legend(fontsize="small", loc="lower right")
    _save(fig, path)


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
    labels, methods = np.asarray(labels), np.asarray(methods)
    for method in [m for m in METHODS if m in set(methods)]:
        at = methods == method
        ax.scatter(
            embedding[at, 0],
            embedding[at, 1],
            s=10,
            marker="o" if method == "original" else "x",
            label=f"{method} ({'fake' if labels[at].any() else 'real'})",
        )
    ax.legend(fontsize="small")


def val_aucs(val_preds: pd.DataFrame) -> pd.DataFrame:
    """Frame-level validation AUC (every video weighing the same, as in `dfpipe.metrics`) of each detector ×
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
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 5), constrained_layout=True, squeeze=False)
    for ax, (embedding, labels, methods, title) in zip(axes[0], panels, strict=True):
        _scatter_methods(ax, embedding, labels, methods)
        ax.set_title(title)
    fig.suptitle("t-SNE of detector features, test split (models chosen by validation AUC)")
    _save(fig, path)
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
