"""The frames stage: which frames of each video to use, and one streaming decoding pass that yields them.

Plan rows (`{out}/frames/{method}/b{batch}.parquet`): `key`, `frame_index` (0-based, in the order the
decoder outputs frames, i.e. what reading a video sequentially with OpenCV counts), `n_planned`.

A video the manifest marks unreadable (or with no frames) still gets exactly one plan row, with
`frame_index` -1 and `n_planned` 0, so it cannot vanish between stages: the faces stage turns that row into
a `not_decoded` row carrying the manifest's error, and the face summary lists the video with 0 planned.

Frames come out upright, one way for every file (`orientation`): ffmpeg decodes the stored pixels
(`-noautorotate`) and numpy turns them as the file says, by its EXIF Orientation for an image (JPEG, PNG,
WebP, TIFF alike) or its display rotation for a video. ffmpeg's own autorotation is not used: ffmpeg 5.1
turns a JPEG by its EXIF but not a PNG, WebP or TIFF, and ffprobe gives the stored size, so a JPEG turned a
quarter was read with width and height swapped (a smeared frame).
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import cv2
import ffmpeg
import numpy as np
import pandas as pd
from PIL import Image

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
    return pd.DataFrame(
        {
            "key": pd.Series(keys, dtype="string"),
            "frame_index": pd.Series(indices, dtype="int64"),
            "n_planned": pd.Series(planned, dtype="int64"),
        }
    )


ORIENTATION_TAG = 0x0112  # EXIF (TIFF) Orientation
# A display rotation by a quarter turn (counter-clockwise, as `rotation` gives it) is the EXIF orientation
# that turns the stored pixels the same way.
QUARTER_TURNS = {0: 1, 90: 8, 180: 3, 270: 6}


def rotation(stream: dict) -> float:
    """The display rotation of a probed video stream in degrees, counter-clockwise, in [0, 360): what the
    decoded pixels are turned by to be shown (the display matrix side data, or the old `rotate` tag)."""
    angle = stream.get("tags", {}).get("rotate") or next(
        (s.get("rotation") for s in stream.get("side_data_list", []) if "rotation" in s), 0
    )
    return float(angle) % 360


def exif_orientation(path: Path) -> int:
    """The EXIF Orientation (1-8) of an image file, as Pillow finds it in JPEG, PNG (eXIf), WebP and TIFF; 1
    when there is none or it holds another value."""
    try:
        with Image.open(path) as image:
            value = image.getexif().get(ORIENTATION_TAG, 1)
    except Exception:  # a file Pillow cannot parse, or broken EXIF: ffmpeg's stored pixels stand as they are
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def orientation(stream: dict, exif: int = 1) -> tuple[int, float]:
    """How the stored pixels of a probed stream are turned to be shown upright: (EXIF orientation 1-8, angle).
    An image's EXIF orientation (`exif`), else the stream's display rotation: within 1° of a quarter turn, the
    EXIF orientation of that turn, and any other angle (degrees counter-clockwise) rotates the frame inside its
    size, as ffmpeg's autorotation does (fftools, 5.x)."""
    if exif != 1:
        return exif, 0.0
    turn = rotation(stream)
    for quarter, code in QUARTER_TURNS.items():
        if min(abs(turn - quarter), abs(turn - quarter - 360)) < 1:
            return code, 0.0
    return 1, turn


# EXIF orientation -> what shows stored pixels (H×W×C) upright: the TIFF 6.0 meaning of tag 274
_SHOW: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],  # mirrored left-right
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),  # mirrored along the main diagonal
    6: lambda a: np.rot90(a, -1),  # stored a quarter turn counter-clockwise: turned clockwise
    7: lambda a: a[::-1, ::-1].swapaxes(0, 1),  # mirrored along the other diagonal
    8: lambda a: np.rot90(a, 1),
}


def upright(frame: np.ndarray, code: int, angle: float = 0.0) -> np.ndarray:
    """A decoded frame (stored pixels, H×W×C) turned as EXIF orientation `code` says, then rotated `angle`
    degrees counter-clockwise inside its size (black corners)."""
    turned = _SHOW[code](frame)
    if angle:
        height, width = turned.shape[:2]
        matrix = cv2.getRotationMatrix2D(((width - 1) / 2, (height - 1) / 2), angle, 1.0)
        return cv2.warpAffine(np.ascontiguousarray(turned), matrix, (width, height), flags=cv2.INTER_LINEAR)
    return np.ascontiguousarray(turned)


def display_size(stream: dict, exif: int = 1) -> tuple[int, int]:
    """(width, height) of the frames `iter_frames` yields for a probed stream (`exif`: an image's EXIF
    orientation): orientations 5-8 transpose the stored size. The manifest and the decoder both size frames
    with this one function."""
    width, height = int(stream["width"]), int(stream["height"])
    return (height, width) if orientation(stream, exif)[0] >= 5 else (width, height)


def _probe_stream(path: Path) -> tuple[dict, int]:
    """The first video stream of `path` and its EXIF orientation (1 unless ffprobe reads it as an image)."""
    try:
        info = ffmpeg.probe(str(path), select_streams="v:0")
    except ffmpeg.Error as exc:
        detail = exc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["ffprobe failed"]
        raise ValueError(f"{path}: not a readable video ({detail[0].removeprefix(f'{path}: ')})") from exc
    streams = info.get("streams") or []
    if not streams or not streams[0].get("width") or not streams[0].get("height"):
        raise ValueError(f"{path}: not a readable video (no video stream)")
    # still images come through ffmpeg's image demuxers: image2, or <codec>_pipe when probed by content
    demuxer = str((info.get("format") or {}).get("format_name", ""))
    exif = exif_orientation(path) if demuxer == "image2" or demuxer.endswith("_pipe") else 1
    return streams[0], exif


def video_size(path: Path) -> tuple[int, int]:
    """(width, height) of the frames `iter_frames` yields for `path` (turned upright), or a ValueError naming
    the file when it is not a readable video or image."""
    return display_size(*_probe_stream(path))


def video_rotation(path: Path) -> float:
    """The display rotation `path` carries (0 when none), see `rotation`."""
    return rotation(_probe_stream(path)[0])


# ffmpeg runs at `-v level+info -debug_ts` with the showinfo filter in front of select. Its log then holds, in
# the order things happened: a `demuxer ->` line per packet read (in decoding order, with its pts), the
# decoder's error lines, which follow the packet being decoded because decoding is synchronous (slice
# threads only, see iter_frames), and a showinfo line per decoded frame (output index n, pts, key frame).
_INPUT_LINE = re.compile(r"\[info\] Input #0, (.+), from ")
_MAPPING_LINE = re.compile(r"\[info\] +Stream #0:(\d+) \([^)]*\) -> showinfo")
_PACKET_LINE = re.compile(r"\[info\] demuxer -> ist_index:(\d+) type:video .* pkt_pts:(-?\d+) ")
_FRAME_LINE = re.compile(r"\[Parsed_showinfo_\d+ @ [^]]*\] \[info\] n: *(\d+) pts: *(-?\d+) .* iskey:(\d)")
_ERROR_LINE = re.compile(r"^(?:\[(?P<src>[^]@]+?) @ [^]]*\] )?\[(?:error|fatal|panic)\] (?P<msg>.*)$")


def _error_line(line: str) -> tuple[str, str] | None:
    """(source, message) of an error line of ffmpeg's log, None for any other line."""
    m = _ERROR_LINE.match(line)
    return ((m.group("src") or "").strip(), m.group("msg").strip()) if m else None


def damaged_frames(log: str) -> dict[int, str]:
    """Frames (decoder output index → the error message) whose decoding used a packet the decoder
    reported an error for, read from an ffmpeg log written as `iter_frames` runs it.

    An error leaves concealed (smeared) macroblocks in its frame, and every later frame predicts from
    them until the next key frame resets prediction: so the damaged packet and every packet after it in
    decoding order up to the next key frame are damaged. Their frames are named by pts, which also catches
    B-frames shown before the damaged frame but decoded after it (they predict from it). The h264
    parser's lines (`[NULL @ ...]`) are skipped: it reads ahead, and the decoder repeats its complaints when
    it reaches the packet; the demuxer's own errors (e.g. `partial file`) come while it reads a packet, so
    they belong to the next packet."""
    demuxer = None
    decoded: str | None = None  # the input stream being decoded (a file may hold a cover picture too)
    packets: list[list] = [[None, None]]  # [pts, first error]; the first entry catches errors before any packet
    pending: str | None = None
    frames: dict[int, tuple[int, bool]] = {}  # pts -> (output index, key frame)
    for line in log.splitlines():
        if (m := _INPUT_LINE.search(line)) and demuxer is None:
            demuxer = m.group(1)
        elif (m := _MAPPING_LINE.search(line)) and decoded is None:
            decoded = m.group(1)
        elif (m := _PACKET_LINE.search(line)) and decoded in (None, m.group(1)):
            packets.append([int(m.group(2)), pending])
            pending = None
        elif m := _FRAME_LINE.search(line):
            frames.setdefault(int(m.group(2)), (int(m.group(1)), m.group(3) == "1"))
        elif error := _error_line(line):
            source, message = error
            if source == "NULL":
                continue
            if source == demuxer:
                pending = pending or message
            elif packets[-1][1] is None:
                packets[-1][1] = message
    damaged: dict[int, str] = {}
    error = None
    for pts, own in packets:
        if pts in frames and frames[pts][1]:
            error = None  # a key frame predicts from nothing before it
        error = own or error
        if error is not None and pts in frames:
            damaged[frames[pts][0]] = error
    return damaged


def select_expression(wanted: Sequence[int]) -> str:
    """An ffmpeg `select` expression true exactly for the frame numbers in `wanted` (sorted, distinct):
    runs of consecutive frames become one `between`, and the terms are summed as a balanced tree, because
    ffmpeg's expression parser gives up ("Cannot allocate memory") on a flat sum of more than 100 terms."""
    runs: list[list[int]] = []
    for i in wanted:
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    terms = [f"eq(n,{a})" if a == b else f"between(n,{a},{b})" for a, b in runs]
    while len(terms) > 1:
        terms = [f"({'+'.join(terms[k : k + 8])})" for k in range(0, len(terms), 8)]
    return terms[0]


def iter_frames(
    path: Path,
    indices: Sequence[int],
    threads: int = 1,
    on_error: Callable[[str], None] | None = None,
    on_damaged: Callable[[int, str], None] | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (frame_index, RGB uint8 array H×W×3) for each wanted index, in increasing order, from one
    straight ffmpeg pass: the select filter keeps the wanted frames, passthrough fps mode stops ffmpeg from
    duplicating or dropping any, and raw frames are read from a pipe one at a time (never all in memory,
    never a seek per frame). Frames come out as a viewer shows them: turned upright by the file's EXIF
    orientation or display rotation (module docstring), their size `display_size` of the stream, the same
    the manifest records.

    A video that stops decoding early (truncated, corrupt) yields the frames it could decode and ends
    without raising; `on_error` then receives a message naming the file and ffmpeg's complaint. When the
    decoder reported errors, `on_damaged(index, message)` is called, once the pass is over, for every
    yielded frame that `damaged_frames` finds output after an error. A file that is not a video raises
    ValueError naming it."""
    path = Path(path)
    wanted = sorted({int(i) for i in indices if int(i) >= 0})
    if not wanted:
        return
    select = select_expression(wanted)
    args = (
        # Slice threads only: frame threads would decode packets out of step with the demuxer's lines,
        # and damaged_frames could not tell which packet an error belongs to.
        ffmpeg.input(str(path), noautorotate=None, threads=threads, thread_type="slice")
        .filter("showinfo", checksum=0)
        .filter("select", select)
        # frames:v stops ffmpeg at the last wanted frame instead of decoding the rest of the video.
        .output("pipe:", format="rawvideo", pix_fmt="rgb24", fps_mode="passthrough", **{"frames:v": len(wanted)})
        .global_args("-nostdin", "-hide_banner", "-nostats", "-v", "level+info", "-debug_ts")
        .compile()
    )
    # stderr goes to a real file, not a pipe: a pipe nobody drains could fill up and stall the decoder.
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL)
        stdout = proc.stdout
        assert stdout is not None
        yielded: list[int] = []
        finished = False  # False when the caller closed us early or the file is not a video: nothing to report
        try:
            # Probed while ffmpeg starts, which hides most of ffprobe's start-up time.
            stream, exif = _probe_stream(path)
            width, height = int(stream["width"]), int(stream["height"])  # as stored: ffmpeg does not turn them
            code, angle = orientation(stream, exif)
            frame_bytes = width * height * 3
            for index in wanted:
                buf = stdout.read(frame_bytes)
                if len(buf) < frame_bytes:
                    break
                yielded.append(index)
                yield index, upright(np.frombuffer(buf, np.uint8).reshape(height, width, 3), code, angle)
            finished = True
        finally:
            if proc.poll() is None:
                proc.kill()
            stdout.close()
            code = proc.wait()
            err.seek(0)
            log = err.read().decode(errors="replace")
            if finished and len(yielded) < len(wanted) and on_error is not None:
                errors = [e[1] for e in map(_error_line, log.splitlines()) if e]
                on_error(
                    f"{path}: decoding stopped after {len(yielded)} of {len(wanted)} wanted frames "
                    f"(ffmpeg exit {code}{': ' + errors[-1] if errors else ''})"
                )
            if finished and on_damaged is not None:
                damaged = damaged_frames(log)
                for index in yielded:
                    if index in damaged:
                        on_damaged(
                            index,
                            f"{path}: frame {index} predicts from a packet the decoder reported "
                            f"an error for, with no key frame in between ({damaged[index]})",
                        )
