"""Figures: matplotlib on a backend that needs no display, and PNGs written atomically."""

from __future__ import annotations

import os

import matplotlib

from dfpipe.io import atomic_path


def pyplot():
    """matplotlib.pyplot on the Agg backend (jobs run without a display)."""
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # here: the backend is chosen before pyplot first loads

    return plt


def save_figure(fig, path: str | os.PathLike, dpi: int = 120) -> None:
    """Write `fig` as a PNG to `path` (atomically) and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)  # the temp name ends in .part, so name the format
    pyplot().close(fig)
