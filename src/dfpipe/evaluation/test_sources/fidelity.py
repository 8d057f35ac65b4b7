"""What MozJPEG cost a test source's images: PSNR, SSIM and bits per pixel of each JPEG in its shards against the
decoded original file (`dfpipe.data.fidelity.measure`), labelled with the file's own encoding, and the report over
every source. Read back from the shards rather than measured as they are written, so that a change to the measure
reruns this and the report only, not the shards and the models scored on them."""

from __future__ import annotations

import tarfile
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from dfpipe.data import fidelity
from dfpipe.data.shards import sample_key
from dfpipe.evaluation.test_sources.images import read_rgb


def shard_jpegs(tars: Iterable[Path]) -> dict[str, bytes]:
    """Sample key → JPEG bytes of every sample in `tars`."""
    out = {}
    for path in tars:
        with tarfile.open(path) as tar:
            for member in tar.getmembers():
                key, _, ext = member.name.partition(".")
                if ext == "jpg":
                    out[key] = tar.extractfile(member).read()
    return out


def measure_source(
    table: pd.DataFrame, root: Path, quality: int, tars: Iterable[Path], threads: int = 1
) -> pd.DataFrame:
    """Per image of `table` (a scan table of the images under `root`) with a split, in its order: key, method,
    quality, psnr, ssim, bpp of its JPEG in `tars` (every split's shards at `quality`) against its decoded file,
    and `original`, its encoding before MozJPEG (`original_encoding`)."""
    rows = table[table["split"].notna()].reset_index(drop=True)
    tars = [Path(t) for t in tars]
    jpegs = shard_jpegs(tars)

    def one(row) -> tuple[float, float, float]:
        key = sample_key(row.method, row.video_id, 0)
        if key not in jpegs:
            raise ValueError(f"{row.path}: no sample {key} in {[t.as_posix() for t in tars]}; rebuild those shards")
        return fidelity.measure(read_rgb(root, row.path), jpegs[key], row.path)

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        done = list(pool.map(one, rows.itertuples(index=False)))
    out = rows[["key", "method"]].copy()
    out["quality"] = int(quality)
    for i, column in enumerate(("psnr", "ssim", "bpp")):
        out[column] = np.array([d[i] for d in done], dtype="float64")
    out["original"] = out["key"].map(original_encoding(table).to_dict())
    return out


def original_encoding(table: pd.DataFrame) -> pd.Series:
    """Each image's encoding before MozJPEG, by key: "PNG", "WEBP", or "JPEG q<estimate>" (the estimate rounded
    to 5), so that the PSNR/SSIM report can tell JPEG-on-JPEG from first compressions."""
    estimate = pd.to_numeric(table["quality_estimate"], errors="coerce")
    encoding = table["encoding"].astype(str).str.upper()
    jpeg = encoding.eq("JPEG") & estimate.notna()
    rounded = (estimate / 5).round().mul(5).astype("Int64").astype(str)
    names = encoding.where(~jpeg, "JPEG q" + rounded)
    return pd.Series(names.to_numpy(), index=table["key"].to_numpy())


def summarize_quality(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """The PSNR/SSIM report of test sources ({name: its measure_source tables concatenated}): per source × method
    × original encoding × MozJPEG quality, as `dfpipe.data.fidelity.summarize` gives it for the main set."""
    named = [t.assign(dataset=name) for name, t in tables.items()]
    return fidelity.summarize(named, keys=("dataset", "method", "original"))
