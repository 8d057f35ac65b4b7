"""The FF++-tree test source (`evaluate.test_sources` kind ffpp_tree): face crops of FF++-layout videos, e.g.
the test-only sets FaceShifter and DeepFakeDetection, in the image-folder layout.

Each asked-for method's fakes and the originals they were made from (`layout.originals_of`: youtube, or the
actors for DeepFakeDetection) get `frames_per_video` evenly spaced frames (`dfpipe.data.frames`), cropped by the
faces stage's own code and settings (`dfpipe.data.faces.crop_batch`) and written as the lossless PNG it makes:

    <dest>/real/<video_id>_<frame>.png        <dest>/fake/<method>/<video_id>_<frame>.png

`<dest>/splits.json` puts every image in the test split: these are videos no model trained on. When the models
did train on this tree's youtube originals, `splits_dir` (FF++ split files) limits youtube-based videos to the
test identities, else their training faces would be scored as unseen. A video that gives no face crop (no face
found, unreadable) is returned with the reason, not raised. `dfpipe.evaluation.test_sources.images.scan` then reads
`<dest>` like any image-folder source, so the crops meet MozJPEG and the shards exactly as the other sources' do.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd

from dfpipe import assets
from dfpipe.config import schema_defaults
from dfpipe.data import faces, frames
from dfpipe.data.layout import (
    DFD_ORIGINAL,
    EXTRA_METHODS,
    FACESHIFTER,
    METHODS,
    ORIGINAL,
    originals_of,
    read_splits,
    split_of,
    video_dir,
)
from dfpipe.data.manifest import probe_row
from dfpipe.evaluation.test_sources.images import Scan, scan
from dfpipe.io import atomic_path, write_json

logger = logging.getLogger(__name__)

REAL, FAKE = "real", "fake"
VIDEOS_PER_CHUNK = 16  # crops of one chunk are held in memory before they are written
YOUTUBE = (ORIGINAL, *METHODS, FACESHIFTER)  # sets named by FF++ identity pairs, which the splits cover


def list_videos(root: Path, methods: Sequence[str], compression: str, where: str) -> list[dict[str, Any]]:
    """Every .mp4 of `methods` and of their originals, as manifest rows without probe results; `where` names
    the config entry in errors."""
    if not methods:
        raise ValueError(f"{where}: methods is empty; name at least one of {', '.join((*METHODS, *EXTRA_METHODS))}")
    unknown = [m for m in methods if m not in (*METHODS, *EXTRA_METHODS)]
    if unknown:
        raise ValueError(f"{where}: unknown methods {unknown}; allowed: {', '.join((*METHODS, *EXTRA_METHODS))}")
    if not root.is_dir():
        raise FileNotFoundError(f"{where}: root {root} is not a folder; point it at an FF++-layout tree")
    sets = list(dict.fromkeys(s for m in methods for s in (originals_of(m), m)))
    missing = [
        f"{s}: {root / video_dir(s, compression)}" for s in sets if not (root / video_dir(s, compression)).is_dir()
    ]
    if missing:
        raise FileNotFoundError(
            f"{where}: {root} lacks the video folders of\n  " + "\n  ".join(missing) + f"\n(compression "
            f"{compression}; download them with ffpp.extra_sets, or change methods / compression)"
        )
    return [
        {"method": s, "video_id": p.stem, "path": p.relative_to(root).as_posix(), "mask_path": None}
        for s in sets
        for p in sorted((root / video_dir(s, compression)).glob("*.mp4"))
        if not p.name.startswith(".")
    ]


def _test_only(rows: list[dict[str, Any]], splits_dir: Path) -> list[dict[str, Any]]:
    """Rows of youtube-based sets whose identities are in the test split of `splits_dir`, and all others."""
    owner = read_splits(splits_dir)
    kept = [r for r in rows if r["method"] not in YOUTUBE or split_of(r["video_id"], owner) == "test"]
    logger.info(
        f"ffpp_tree: {len(rows) - len(kept)} youtube-based videos outside the test split of {splits_dir} left out"
    )
    return kept


def _why(frames_of_video: pd.DataFrame) -> str:
    """Why a video gave no crop: its status counts and the first reason."""
    counts = frames_of_video["status"].value_counts()
    return ", ".join(f"{n} {s}" for s, n in counts.items()) + f": {frames_of_video['reason'].iloc[0]}"


def build(
    root: Path,
    dest: Path,
    methods: Sequence[str],
    *,
    where: str,
    compression: str,
    frames_per_video: int,
    face_settings: dict[str, Any],
    model_path: Path,
    splits_dir: Path | None = None,
    threads: int = 1,
) -> tuple[Path, list[tuple[str, str]]]:
    """Write the crops under `dest` (see the module docstring). Returns the split file for
    `images.scan` and the videos without any crop as (path under `root`, reason)."""
    root, dest = Path(root), Path(dest)
    listed = list_videos(root, methods, compression, where)
    if splits_dir is not None:
        listed = _test_only(listed, Path(splits_dir))
    if not listed:
        raise FileNotFoundError(f"{where}: no .mp4 videos for {list(methods)} under {root}")
    with ThreadPoolExecutor(max(1, threads)) as pool:
        videos = pd.DataFrame(pool.map(lambda r: probe_row(root, r), listed))
    videos["key"] = videos["method"] + "/" + videos["video_id"]
    videos["label"] = (~videos["method"].isin([ORIGINAL, DFD_ORIGINAL])).astype("int8")
    videos["split"] = "test"
    # A rebuild (other frames or face settings) must not leave the last build's crops behind.
    for folder in (REAL, FAKE):
        shutil.rmtree(dest / folder, ignore_errors=True)
    names: list[str] = []
    left_out: list[tuple[str, str]] = []
    for start in range(0, len(videos), VIDEOS_PER_CHUNK):
        chunk = videos.iloc[start : start + VIDEOS_PER_CHUNK]
        plan = frames.plan_batch(chunk, frames_per_video, {})
        table = faces.crop_batch(plan, chunk, root, face_settings, model_path, threads=threads)
        by_key = dict(tuple(table.groupby("key", sort=False)))
        for video in chunk.itertuples(index=False):
            rows = by_key[video.key]
            ok = rows[rows["status"] == "ok"]
            if ok.empty:
                left_out.append((video.path, _why(rows)))
                logger.warning(f"ffpp_tree: {video.path}: no face crop ({left_out[-1][1]})")
                continue
            folder = REAL if video.label == 0 else f"{FAKE}/{video.method}"
            for frame, png in zip(ok["frame_index"], ok["crop_png"]):
                rel = f"{folder}/{video.video_id}_{int(frame):04d}.png"
                with atomic_path(dest / rel) as tmp:
                    tmp.write_bytes(png)
                names.append(rel)
        logger.info(f"ffpp_tree: {min(start + VIDEOS_PER_CHUNK, len(videos))} of {len(videos)} videos cropped")
    if not names:
        raise ValueError(f"{where}: not one face crop from the {len(videos)} videos under {root}: {left_out[0][1]}")
    write_json(dest / "splits.json", {"test": names})
    return dest / "splits.json", left_out


def scan_entry(
    entry: Mapping[str, Any], folder: Path, settings: Mapping[str, Any], *, where: str, threads: int = 1
) -> Scan:
    """Kind ffpp_tree: crop the faces of the videos of the tree at the entry's `root` into `folder` with the faces
    settings in `settings` (none: the schema's defaults), then scan them; the videos without a crop are the scan's
    `left_out`."""
    split_file, left_out = build(
        Path(entry["root"]).expanduser(),
        folder,
        entry.get("methods") or [],
        where=where,
        compression=entry["compression"],
        frames_per_video=int(entry["frames_per_video"]),
        face_settings=dict(settings.get("faces") or schema_defaults("faces")),
        model_path=assets.face_detector_model(),
        splits_dir=entry.get("splits_dir"),
        threads=threads,
    )
    result = scan(folder, split_file=split_file)
    result.left_out = left_out
    return result
