"""The `local` source: an existing FaceForensics++ tree (or any dataset in its layout), used in place."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..layout import ORIGINAL, video_dir


def check_tree(root: Path, methods: Sequence[str], compression: str) -> None:
    """Raise one error naming every expected video folder that is missing under `root`."""
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: local.root is not a folder; point it at an FF++-layout tree")
    missing = [
        str(root / video_dir(m, compression))
        for m in (ORIGINAL, *methods)
        if not (root / video_dir(m, compression)).is_dir()
    ]
    if missing:
        raise FileNotFoundError(
            f"{root}: not an FF++-layout tree for compression {compression}; missing folders:\n  "
            + "\n  ".join(missing)
            + "\n(set dataset.compression / dataset.methods in config.yaml to what the tree holds)"
        )
