"""The `local` source: an existing FaceForensics++ tree (or any dataset in its layout), used in place."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from dfpipe.data.layout import ORIGINAL, read_splits, video_dir

logger = logging.getLogger(__name__)


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


def check_splits(root: Path, splits_dir: Path, compression: str) -> None:
    """Read the split files before any video is probed, and compare their ids with the tree's originals.

    Ids without a video are only logged (a partial download, `ffpp.num_videos`); split files that name none
    of the tree's videos are refused, since every video would fall out of the shards.
    """
    owner = read_splits(splits_dir)
    have = {p.stem for p in (root / video_dir(ORIGINAL, compression)).glob("*.mp4")}
    if have and not have & set(owner):
        raise ValueError(
            f"{splits_dir}: the split files name none of the {len(have)} original videos in "
            f"{root / video_dir(ORIGINAL, compression)} (e.g. {min(have)}); set splits.dir to this dataset's splits"
        )
    unknown = sorted(set(owner) - have)
    if unknown:
        logger.info(
            f"splits: {len(unknown)} ids in {splits_dir} have no original video in the dataset (ignored): "
            + ", ".join(unknown[:10])
            + (" ..." if len(unknown) > 10 else "")
        )
