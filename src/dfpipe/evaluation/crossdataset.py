"""The cross-dataset matrix: every model scored on the test sources (config `evaluate.test_sources`), extra datasets
that `dfpipe.evaluation.test_sources` builds, scans and puts into shards of the main format.

The test sources' shard paths, splits and config lookup, which the rule files need, are in
`dfpipe.evaluation.crossdataset_layout`: this module imports torch, timm and scikit-learn, too slow for every workflow read.

`detector_rows` / `probe_rows` turn scores into rows of one long table (`MATRIX_COLUMNS`): train dataset ×
test dataset × test quality → AUC with its bootstrap interval (`INTERVAL`) and balanced ACC, per model, with
the samples scored (n, n_pos fake, n_neg real); `plot_matrix` draws it as a heat map. Probes fill it source ×
source (`dfpipe.evaluation.probes.routing`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.patches import Rectangle

from dfpipe.evaluation import probes
from dfpipe.evaluation.metrics import bootstrap_auc_ci, choose_threshold, identity_keys, video_weights
from dfpipe.evaluation.shortcuts import flags as shortcut_flags
from dfpipe.figures import pyplot, save_figure

MATRIX_COLUMNS = [
    "train_dataset",
    "test_dataset",
    "model",
    "kind",
    "train_quality",
    "test_quality",
    "n",
    "n_pos",
    "n_neg",
    "auc",
    "auc_lo",
    "auc_hi",
    "bacc",
]
SHORTCUT_COLUMNS = ["shortcut_cue", "shortcut_auc", "shortcut"]  # added by mark_shortcuts
INTERVAL = ("auc_lo", "auc_hi")  # percentile bootstrap 95% interval of the AUC (detector rows: resampling identities)


def has_train_split(shards_dir: Path, qualities: Sequence[int]) -> bool:
    """Whether a test source's train shards hold images at every quality (an ffpp_tree source's are empty)."""
    counts = [json.loads((Path(shards_dir) / f"q{q}" / "train.counts.json").read_text()) for q in qualities]
    return all(c["samples"] > 0 for c in counts)


def image_identities(table: pd.DataFrame) -> dict[str, str]:
    """video_id → identity of a test source's images (its scan table): the first folder inside the class folder
    (`real/<identity>/...`, `fake/<generator>/<identity>/...`: a GAN-face set's identity numbers, a folder per
    person in an image folder), else the image itself. Views of one person are not independent samples."""
    rest = table["path"].astype(str).str.split("/").map(lambda p: p[1:] if p[0] == "real" else p[2:])
    identity = [r[0] if len(r) > 1 else v for r, v in zip(rest, table["video_id"])]
    return dict(zip(table["video_id"], identity))


def source_groups(video_keys: np.ndarray, identities: Mapping[str, str] | None) -> np.ndarray:
    """The identity of each test-source sample (`image_identities` by video_id; an unknown id is its own)."""
    known = identities or {}
    ids = pd.Series(video_keys).str.rsplit("/", n=1).str[-1]
    return np.array([known.get(i, i) for i in ids], dtype=object)


def _scores_row(labels, scores, predicted, video_keys, groups, n_boot: int, seed: int) -> dict[str, Any]:
    """Counts, AUC with its interval resampling whole `groups` (identities: each brings its images of both
    classes), balanced ACC of `predicted`; frames weigh 1 / their video's count."""
    m = probes.evaluate_scores(labels, scores, predicted, video_keys, n_boot=0, seed=seed)
    if n_boot and np.isfinite(m["auc"]):
        w = video_weights(video_keys)
        m["auc_lo"], m["auc_hi"] = bootstrap_auc_ci(
            labels, scores, n=n_boot, seed=seed, groups=groups, weights=w, stratify=False
        )
    return {c: m[c] for c in ("n", "n_pos", "n_neg", "auc", *INTERVAL, "bacc")}


def detector_rows(
    predictions: pd.DataFrame,
    cross: pd.DataFrame,
    train_dataset: str,
    test_dataset: str,
    model: str,
    n_boot: int = 0,
    seed: int = 0,
    identities: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Rows of one detector: on its own test split (`predictions`, the predict rule's table) and on a test
    source (`cross`: test_quality, label, score, video_key). Balanced ACC at the threshold chosen on the
    model's own validation split (as the AUC table does); the AUC's interval from `n_boot` resamples of whole
    identities: the main split's target identities (`metrics.identity_keys`, as the main table), the test
    source's by `identities` (video_id → identity, `image_identities`; None: each image its own); 0: NaN bounds."""
    val = predictions[predictions["split"] == "val"]
    w = video_weights(val["video_key"].to_numpy())
    threshold = choose_threshold(val["label"].to_numpy(), val["score"].to_numpy(), w)
    tq = int(predictions["train_quality"].iloc[0])
    rows = []
    own = predictions[predictions["split"] == "test"]
    for dataset, table, main in ((train_dataset, own, True), (test_dataset, cross, False)):
        for q, part in table.groupby("test_quality", sort=True):
            scores = part["score"].to_numpy()
            keys = part["video_key"].to_numpy()
            groups = identity_keys(keys) if main else source_groups(keys, identities)
            rows.append(
                {
                    "train_dataset": train_dataset,
                    "test_dataset": dataset,
                    "model": model,
                    "kind": "detector",
                    "train_quality": tq,
                    "test_quality": int(q),
                    **_scores_row(
                        part["label"].to_numpy(),
                        scores,
                        scores >= threshold,
                        keys,
                        groups,
                        n_boot,
                        seed,
                    ),
                }
            )
    return rows


def probe_rows(table: pd.DataFrame, train_dataset: str, test_dataset: str) -> pd.DataFrame:
    """Matrix rows from a probe table (untransformed test images), one per probe and test quality; a probe is
    named backbone/reduction/classifier/train transform. Counts and the AUC interval are the probe table's
    (config probes.bootstrap resamples)."""
    sel = table[(table["test_transform"] == "none") & table["auc"].notna()]
    out = pd.DataFrame(
        {
            "train_dataset": train_dataset,
            "test_dataset": test_dataset,
            "model": sel["backbone"] + "/" + sel["reduction"] + "/" + sel["classifier"] + "/" + sel["train_transform"],
            "kind": "probe",
            "train_quality": sel["train_quality"].astype(int),
            "test_quality": sel["test_quality"].astype(int),
            **{c: sel[c] for c in ("n", "n_pos", "n_neg", "auc", *INTERVAL, "bacc")},
        }
    )
    return out.reindex(columns=MATRIX_COLUMNS)


def mark_shortcuts(matrix: pd.DataFrame, shortcut_table: pd.DataFrame) -> pd.DataFrame:
    """`matrix` with, per row, its test set's strongest shortcut cue at that quality (`dfpipe.evaluation.shortcuts`):
    `shortcut_cue`, `shortcut_auc` and `shortcut` (True where a cue alone reaches the flag)."""
    marks = shortcut_flags(shortcut_table).rename(columns={"dataset": "test_dataset"})
    out = matrix.drop(columns=[c for c in SHORTCUT_COLUMNS if c in matrix]).merge(
        marks, on=["test_dataset", "test_quality"], how="left"
    )
    out["shortcut"] = out["shortcut"].eq(True)
    return out


def _cell_notes(matrix: pd.DataFrame) -> pd.DataFrame:
    """Per pair × test quality: the one model's interval bounds (NaN when the cell averages several models or
    has no interval), how many models have an interval, and how many of those lie off 0.5 (all above or below)."""
    m = matrix.assign(
        has=matrix["auc_lo"].notna() & matrix["auc_hi"].notna(),
        off=(matrix["auc_lo"] > 0.5) | (matrix["auc_hi"] < 0.5),
    )
    m["shortcut"] = m["shortcut"].eq(True)
    cells = m.groupby(["pair", "test_quality"]).agg(
        shortcut=("shortcut", "any"),
        cue=("shortcut_cue", "first"),
        cue_auc=("shortcut_auc", "first"),
        models=("auc", "count"),
        lo=("auc_lo", "first"),
        hi=("auc_hi", "first"),
        bounded=("has", "sum"),
        off=("off", "sum"),
    )
    single = cells["models"] == 1
    cells[["lo", "hi"]] = cells[["lo", "hi"]].where(single, np.nan)
    return cells


def plot_matrix(matrix: pd.DataFrame, path: str | Path) -> None:
    """Heat map of mean AUC: rows train dataset → test dataset per kind of model, columns test quality. Under
    the AUC each cell gives the bootstrap 95% interval when it holds one model, else "k/m ≠ 0.5": of the m
    models with an interval, k have one that excludes 0.5. A cell where every model's interval holds 0.5 (no
    model told apart from chance) is hatched; cells without intervals (bootstrap 0) show the AUC only."""
    plt = pyplot()
    m = matrix.reindex(columns=[*matrix.columns, *(c for c in (*INTERVAL, *SHORTCUT_COLUMNS) if c not in matrix)])
    m = m.assign(pair=m["kind"] + ": " + m["train_dataset"] + " → " + m["test_dataset"])
    grid = m.pivot_table(index="pair", columns="test_quality", values="auc", aggfunc="mean")
    grid = grid[sorted(grid.columns, reverse=True)]
    cells = _cell_notes(m)
    fig, ax = plt.subplots(figsize=(1.6 * grid.shape[1] + 4, 0.7 * grid.shape[0] + 1.8))
    im = ax.imshow(grid.to_numpy(), vmin=0.0, vmax=1.0, cmap="RdYlGn", aspect="auto")
    ax.set_xticks(range(grid.shape[1]), [f"q{q}" for q in grid.columns])
    ax.set_yticks(range(grid.shape[0]), grid.index)
    for (i, j), v in np.ndenumerate(grid.to_numpy()):
        if not np.isfinite(v):
            continue
        cell = cells.loc[(grid.index[i], grid.columns[j])]
        text = f"{v:.2f}"
        if np.isfinite(cell["lo"]):
            text += f"\n[{cell['lo']:.2f}, {cell['hi']:.2f}]"
        elif cell["bounded"]:
            text += f"\n{int(cell['off'])}/{int(cell['bounded'])} ≠ 0.5"
        chance = bool(cell["bounded"]) and not cell["off"]
        if chance:
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="//", edgecolor="0.35", lw=0))
        if cell["shortcut"]:  # a trivial cue separates this test set: the AUC may measure the cue
            text += f"\nshortcut: {cell['cue']} {float(cell['cue_auc']):.2f}"
            ax.add_patch(Rectangle((j - 0.48, i - 0.48), 0.96, 0.96, fill=False, edgecolor="black", lw=2.5, ls="--"))
        box = {"facecolor": "white", "alpha": 0.7, "lw": 0, "pad": 1.5} if chance else None
        ax.text(j, i, text, ha="center", va="center", fontsize=7, bbox=box)
    ax.set_xlabel("test quality")
    ax.set_title(
        "cross-dataset mean AUC (over models), bootstrap 95% CI\nhatched: every interval holds 0.5; dashed frame: "
        "a cue alone separates the test set (shortcut_table.csv)"
    )
    fig.colorbar(im, ax=ax, fraction=0.04)
    fig.tight_layout()
    save_figure(fig, path)
