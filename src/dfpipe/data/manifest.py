"""The manifest: one row per video of the dataset, whatever the source, read by every later stage."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import ffmpeg
import pandas as pd

from dfpipe.data.frames import display_size
from dfpipe.data.layout import ORIGINAL, mask_dir, read_splits, split_of, video_dir

logger = logging.getLogger(__name__)

COLUMNS = [
    "key",
    "video_id",
    "method",
    "compression",
    "split",
    "label",
    "path",
    "mask_path",
    "fps",
    "n_frames",
    "duration",
    "bytes",
    "width",
    "height",
    "status",
    "error",
    "batch",
]


def list_videos(dataset_root: Path, methods: Sequence[str], compression: str) -> list[dict[str, Any]]:
    """Every video file of the originals and `methods` at `compression`, with its mask if present."""
    rows = []
    for method in (ORIGINAL, *methods):
        folder = dataset_root / video_dir(method, compression)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: video folder missing for method {method}, compression {compression}")
        masks = dataset_root / mask_dir(method) if method != ORIGINAL else None
        for path in sorted(folder.iterdir()):
            if path.name.startswith(".") or not path.is_file():
                continue
            mask = masks / path.name if masks is not None and (masks / path.name).is_file() else None
            rows.append(
                {
                    "method": method,
                    "video_id": path.stem,
                    "path": path.relative_to(dataset_root).as_posix(),
                    "mask_path": mask.relative_to(dataset_root).as_posix() if mask else None,
                }
            )
    return rows


def probe(path: Path) -> dict[str, Any]:
    """fps, exact frame count (packets counted, so a truncated file reports what it really holds), and the
    size of the frames as decoded (rotation metadata applied, see `frames.display_size`)."""
    info = ffmpeg.probe(str(path), select_streams="v:0", count_packets=None)
    streams = info.get("streams") or []
    if not streams:
        raise ValueError("no video stream")
    stream = streams[0]
    num, _, den = stream.get("avg_frame_rate", "0/1").partition("/")
    fps = float(num) / float(den or 1) if float(den or 1) else 0.0
    n_frames = int(stream.get("nb_read_packets") or 0)
    if n_frames <= 0 or fps <= 0:
        raise ValueError(f"no decodable frames (fps={fps:g}, frames={n_frames})")
    width, height = display_size(stream)
    return {"fps": fps, "n_frames": n_frames, "duration": n_frames / fps, "width": width, "height": height}


def relative_text(text: str, root: Path) -> str:
    """`text` (an error message) with every absolute spelling of the dataset root cut off the paths in it:
    stored messages name files relative to the root, like the manifest's `path` column."""
    for prefix in sorted({str(root), str(Path(root).absolute()), str(Path(root).resolve())}, key=len, reverse=True):
        text = text.replace(prefix.rstrip("/") + "/", "")
    return text


def ffprobe_complaint(stderr: bytes, path: Path) -> str:
    """ffprobe's error lines as one short text: its last three distinct messages, without the component
    tags (`[mov,mp4,... @ 0x55...]`) and without the file name it repeats (the caller names the file)."""
    messages = []
    for line in stderr.decode(errors="replace").splitlines():
        text = re.sub(r"^\[[^]]* @ 0x[0-9a-f]+\] ", "", line.strip()).removeprefix(f"{path}: ")
        if text and text not in messages:
            messages.append(text)
    return "; ".join(messages[-3:])


def probe_row(dataset_root: Path, row: dict[str, Any]) -> dict[str, Any]:
    """`row` (method, video_id, path, mask_path) with its size and `probe` results, or status unreadable and the
    error naming the file (relative to the root)."""
    path = dataset_root / row["path"]
    out = dict(row, bytes=path.stat().st_size, status="ok", error=None)
    try:
        out.update(probe(path))
    except (ffmpeg.Error, ValueError, KeyError) as exc:
        detail = ffprobe_complaint(exc.stderr, path) if isinstance(exc, ffmpeg.Error) else str(exc)
        message = relative_text(detail, dataset_root) or "ffprobe failed"
        out.update(
            status="unreadable", error=f"{row['path']}: {message}", fps=0.0, n_frames=0, duration=0.0, width=0, height=0
        )
    return out


def build(
    dataset_root: Path,
    splits_dir: Path,
    methods: Sequence[str],
    compression: str,
    videos_per_job: int,
    threads: int = 1,
) -> pd.DataFrame:
    dataset_root = Path(dataset_root)
    owner = read_splits(splits_dir)
    listed = list_videos(dataset_root, methods, compression)
    if not listed:
        raise FileNotFoundError(
            f"{dataset_root}: no videos found for {', '.join((ORIGINAL, *methods))} at {compression}"
        )
    with ThreadPoolExecutor(max(1, threads)) as pool:
        rows = list(pool.map(lambda r: probe_row(dataset_root, r), listed))
    df = pd.DataFrame(rows)
    df["key"] = df["method"] + "/" + df["video_id"]
    df["compression"] = compression
    df["label"] = (df["method"] != ORIGINAL).astype("int8")
    df["split"] = [split_of(v, owner) for v in df["video_id"]]
    df = df.sort_values(["method", "video_id"], kind="stable").reset_index(drop=True)
    df["batch"] = df.groupby("method").cumcount() // videos_per_job
    for row in df[df["status"] != "ok"].itertuples():
        logger.warning(f"unreadable video: {row.error}")
    unsplit = df[df["split"].isna()]
    if len(unsplit):
        logger.info(
            f"{len(unsplit)} videos belong to no split in {splits_dir} (kept in the manifest, left out of shards): "
            + ", ".join(unsplit["key"].head(10))
            + (" ..." if len(unsplit) > 10 else "")
        )
    return df[COLUMNS]


def batches(manifest: pd.DataFrame) -> list[tuple[str, int]]:
    """(method, batch) pairs present in the manifest, in a stable order."""
    pairs = manifest[["method", "batch"]].drop_duplicates().sort_values(["method", "batch"])
    return [(m, int(b)) for m, b in pairs.itertuples(index=False)]
