"""A test source's images through MozJPEG at one quality into shards of the main format: `{out_dir}/{split}-0000.tar`,
`{split}.counts.json` and `index.json` for each split in `SPLITS`, as the shards stage writes them, so the loader,
predict and the probes read them like the main dataset's. What MozJPEG cost is measured apart (`fidelity`): a change
to that measure must not rewrite the shards, which would rerun every model scored on them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from dfpipe.data import shards
from dfpipe.evaluation.crossdataset_layout import SPLITS
from dfpipe.evaluation.test_sources.images import compress_images
from dfpipe.io import write_json


def write_source_shards(
    table: pd.DataFrame, root: Path, quality: int, flags: Sequence[str], cjpeg: Path, out_dir: Path, threads: int = 1
) -> dict[str, Any]:
    """MozJPEG at `quality` of every image of `table` (a scan table of the images under `root`) with a split, one
    shard per split plus counts and index.json; returns the index."""
    jpegs = compress_images(table, root, quality, flags, cjpeg, threads=threads)
    counts = []
    for split in SPLITS:
        c = shards.write_split([jpegs], quality, split, 1, out_dir)
        write_json(Path(out_dir) / f"{split}.counts.json", c)
        counts.append(c)
    return shards.write_index(counts, Path(out_dir) / "index.json")
