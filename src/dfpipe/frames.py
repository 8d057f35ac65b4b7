"""The frames stage: which frames of each video to use, and one streaming decoding pass that yields them.

Plan rows (`{out}/frames/{method}/b{batch}.parquet`): `key`, `frame_index` (0-based, in the order the
decoder outputs frames, i.e. what reading a video sequentially with OpenCV counts), `n_planned`.

A video the manifest marks unreadable (or with no frames) still gets exactly one plan row, with
`frame_index` -1 and `n_planned` 0, so it cannot vanish between stages: the faces stage turns that row into
a `not_decoded` row carrying the manifest's error, and the face summary lists the video with 0 planned.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import Callable, Iterator, Sequence

import ffmpeg
import numpy as np
import pandas as pd

UNREADABLE = -1  # frame_index of the placeholder row of a video the manifest could not read


def sample_indices(n_frames: int, n: int) -> list[int]:
    """`n` frame indices spread evenly over the whole video (the centre of `n` equal segments), or every
    frame when the video has no more than `n`. Centres rather than endpoints keep clear of the very last
    frame, whose presence the container's frame count does not always guarantee."""
    if n_frames <= 0 or n <= 0:
        return []
    if n >= n_frames:
        return list(range(n_frames))
    # Integer arithmetic: floor((2i + 1) * n_frames / 2n) is strictly increasing when n < n_frames.
    return [(2 * i + 1) * n_frames // (2 * n) for i in range(n)]


def plan_batch(videos: pd.DataFrame, per_video: int, per_method: dict[str, int]) -> pd.DataFrame:
    """Planned frames of a batch of manifest rows: `per_video` evenly spaced frames per video (or the
    method's override in `per_method`), from the manifest's exact frame count. Unreadable videos get one
    placeholder row (frame_index -1, n_planned 0), see the module docstring."""
    keys: list[str] = []
    indices: list[int] = []
    planned: list[int] = []
    for row in videos.itertuples(index=False):
        n_frames = int(row.n_frames) if pd.notna(row.n_frames) else 0
        chosen = sample_indices(n_frames, per_method.get(row.method, per_video)) if row.status == "ok" else []
        if not chosen:
            chosen, count = [UNREADABLE], 0
        else:
            count = len(chosen)
        keys += [row.key] * len(chosen)
        indices += chosen
        planned += [count] * len(chosen)
    return pd.DataFrame({
        "key": pd.Series(keys, dtype="string"),
        "frame_index": pd.Series(indices, dtype="int64"),
        "n_planned": pd.Series(planned, dtype="int64"),
    })


def video_size(path: Path) -> tuple[int, int]:
    """(width, height) of the frames ffmpeg will output for `path` (rotation applied), or a ValueError
    naming the file when it is not a readable video."""
    try:
        info = ffmpeg.probe(str(path), select_streams="v:0")
    except ffmpeg.Error as exc:
        detail = exc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["ffprobe failed"]
        raise ValueError(f"{path}: not a readable video ({detail[0]})") from exc
    streams = info.get("streams") or []
    if not streams or not streams[0].get("width") or not streams[0].get("height"):
        raise ValueError(f"{path}: not a readable video (no video stream)")
    stream = streams[0]
    width, height = int(stream["width"]), int(stream["height"])
    # ffmpeg auto-rotates phone videos; a quarter turn swaps the output's width and height.
    rotation = stream.get("tags", {}).get("rotate") or next(
        (s.get("rotation") for s in stream.get("side_data_list", []) if "rotation" in s), 0)
    if abs(int(float(rotation))) % 180 == 90:
        width, height = height, width
    return width, height


def iter_frames(
    path: Path,
    indices: Sequence[int],
    threads: int = 1,
    on_error: Callable[[str], None] | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (frame_index, RGB uint8 array H×W×3) for each wanted index, in increasing order, from one
    straight ffmpeg pass: the select filter keeps the wanted frames, passthrough fps mode stops ffmpeg from
    duplicating or dropping any, and raw frames are read from a pipe one at a time (never all in memory,
    never a seek per frame).

    A video that stops decoding early (truncated, corrupt) yields the frames it could decode and ends
    without raising; `on_error` then receives a message naming the file and ffmpeg's complaint. A file that
    is not a video raises ValueError naming it."""
    path = Path(path)
    wanted = sorted({int(i) for i in indices if int(i) >= 0})
    if not wanted:
        return
    select = "+".join(f"eq(n,{i})" for i in wanted)
    args = (
        ffmpeg.input(str(path), threads=threads)
        .filter("select", select)
        # frames:v stops ffmpeg at the last wanted frame instead of decoding the rest of the video.
        .output("pipe:", format="rawvideo", pix_fmt="rgb24", fps_mode="passthrough", **{"frames:v": len(wanted)})
        .global_args("-nostdin", "-v", "error")
        .compile()
    )
    # stderr goes to a real file, not a pipe: a pipe nobody drains could fill up and stall the decoder.
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL)
        stdout = proc.stdout
        assert stdout is not None
        got = 0
        try:
            # Probed while ffmpeg starts, which hides most of ffprobe's start-up time.
            width, height = video_size(path)
            frame_bytes = width * height * 3
            for index in wanted:
                buf = stdout.read(frame_bytes)
                if len(buf) < frame_bytes:
                    break
                got += 1
                yield index, np.frombuffer(buf, np.uint8).reshape(height, width, 3)
        finally:
            if proc.poll() is None:
                proc.kill()
            stdout.close()
            code = proc.wait()
        if got < len(wanted) and on_error is not None:
            err.seek(0)
            tail = err.read().decode(errors="replace").strip().splitlines()[-1:]
            on_error(f"{path}: decoding stopped after {got} of {len(wanted)} wanted frames "
                     f"(ffmpeg exit {code}{': ' + tail[0] if tail else ''})")
