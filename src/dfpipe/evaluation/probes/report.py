"""The probe table's files: the CSV of every row, a markdown of the best rows by validation AUC (never a test
metric) and the plot of classifier, backbone and test-transform effects."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from dfpipe.evaluation.probes.classifiers import CLASSIFIERS
from dfpipe.evaluation.probes.table import PROBE_COLUMNS
from dfpipe.evaluation.probes.transforms import TRANSFORMS
from dfpipe.evaluation.tables import pyplot, save_figure, to_markdown
from dfpipe.io import atomic_path, write_csv


def _transform_grid(table: pd.DataFrame) -> pd.DataFrame:
    """Mean test AUC per train transform (rows) × test transform (columns), over every other setting, in
    `TRANSFORMS` order."""
    grid = table.pivot_table(index="train_transform", columns="test_transform", values="auc", aggfunc="mean")
    order = [t for t in TRANSFORMS if t in grid.index] + [t for t in grid.index if t not in TRANSFORMS]
    cols = [t for t in TRANSFORMS if t in grid.columns] + [t for t in grid.columns if t not in TRANSFORMS]
    return grid.reindex(index=order, columns=cols)


def plot_probe_effects(table: pd.DataFrame, path: str | Path) -> None:
    """The seed's effect plots side by side: mean AUC per classifier (one bar per backbone) and per backbone
    (one bar per reduction) on untransformed test images, and a heat map of mean AUC per train transform ×
    test transform (the seed's "Inference 2": how a transform of the test images hurts, and whether training
    with it helps), each over every other setting."""
    plt = pyplot()
    sel = table[table["test_transform"] == "none"] if (table["test_transform"] == "none").any() else table
    grid = _transform_grid(table)
    fig, axes = plt.subplots(
        1,
        3,
        figsize=(13 + 0.9 * grid.shape[1], 4.5),
        gridspec_kw={"width_ratios": [3, 1.2, 0.5 + 0.45 * grid.shape[1]]},
    )
    for ax, (x, hue) in zip(axes, (("classifier", "backbone"), ("backbone", "reduction"))):
        means = sel.pivot_table(index=x, columns=hue, values="auc", aggfunc="mean")
        means = means.reindex([c for c in (CLASSIFIERS if x == "classifier" else means.index) if c in means.index])
        width = 0.8 / max(1, means.shape[1])
        pos = np.arange(len(means))
        for i, col in enumerate(means.columns):
            ax.bar(pos + i * width - 0.4 + width / 2, means[col].to_numpy(), width, label=str(col))
        ax.set_xticks(pos, means.index, rotation=35, ha="right")
        ax.set_ylabel("mean test AUC")
        ax.set_ylim(min(0.4, float(np.nanmin(means.to_numpy(), initial=1.0)) - 0.05), 1.0)
        ax.axhline(0.5, color="grey", lw=0.8, ls=":")
        ax.set_title(f"{x} effect")
        ax.legend(fontsize=7, title=hue, title_fontsize=7)
    ax = axes[2]
    ax.set_title("test transform effect\n(mean test AUC)")
    values = grid.to_numpy(dtype=float)
    if np.isfinite(values).any():
        # chance (0.5) red to perfect green, as the cross-dataset heat map; the numbers give the small effects
        im = ax.imshow(values, vmin=0.5, vmax=1.0, cmap="RdYlGn", aspect="auto")
        ax.set_xticks(range(grid.shape[1]), grid.columns, rotation=35, ha="right")
        ax.set_yticks(range(grid.shape[0]), grid.index)
        for (i, j), v in np.ndenumerate(values):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.3f}", ha="center", va="center", fontsize=9)
        ax.set_xlabel("test transform")
        ax.set_ylabel("train transform")
        fig.colorbar(im, ax=ax, fraction=0.08, pad=0.04)
    else:
        ax.axis("off")
        ax.text(0.5, 0.5, "no AUC", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    save_figure(fig, path)


def write_probe_results(table: pd.DataFrame, out_dir: str | Path, top: int = 20) -> list[Path]:
    """`probe_table.csv` (every row), `probe_table.md` (the `top` rows with metrics by validation AUC, then
    every failed row) and `probe_effects.png`.

    Nothing shown is chosen on test data: the rows are ranked by `auc_val` alone, ties (a probe has the same
    val AUC at every test quality and transform) and rows without a val split (last) kept in table order."""
    out_dir = Path(out_dir)
    write_csv(out_dir / "probe_table.csv", table)
    has_error = table["error"].fillna("") != ""
    failed, ok = table[has_error], table[~has_error]
    order = np.argsort(-ok["auc_val"].fillna(-np.inf).to_numpy(dtype=float), kind="stable")
    best = ok.iloc[order[:top]]
    cols = [c for c in PROBE_COLUMNS if c not in ("error", "n_pos", "n_neg")]
    text = f"# Probe table: best {len(best)} of {len(table)} rows by validation AUC (auc_val)\n\n" + to_markdown(
        best[cols]
    )
    if len(failed):
        text += f"\n## {len(failed)} rows without metrics\n\n" + to_markdown(failed[[*PROBE_COLUMNS[:7], "error"]])
    with atomic_path(out_dir / "probe_table.md") as tmp:
        tmp.write_text(text)
    plot_probe_effects(table, out_dir / "probe_effects.png")
    return [out_dir / "probe_table.csv", out_dir / "probe_table.md", out_dir / "probe_effects.png"]
