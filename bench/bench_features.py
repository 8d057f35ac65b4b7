"""Probe feature extraction against a bare batched forward of the same frozen backbone on the same tensors.

    PYTHONPATH=src .venv/bin/python bench/bench_features.py [--backbone lite0] [--size 224] [--batch 64]
        [--n 512] [--rounds 3] [--device auto]

- features: `dfpipe.evaluation.probes.extract_features` on uint8 batches (normalise, channels_last, inference mode, one
  forward per image, features back to the CPU as numpy), as the cached extraction runs it;
- bare: the same module in eval/inference mode on the same batches already normalised, channels_last and on
  the device (an upper bound: no normalisation, no copies back).
Images are real photos (scikit-image's astronaut and coffee, cut into random crops). Prints images/s of both
and the ratio features / bare (target >= 0.9). Each figure is the best of `--rounds`. Never asserts.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from skimage import data

from dfpipe.evaluation import probes


def crops(n: int, size: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    photos = [data.astronaut(), data.coffee(), data.chelsea()]
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        photo = photos[i % len(photos)]
        side = min(photo.shape[:2])
        c = int(rng.integers(side // 3, side))
        y, x = rng.integers(0, photo.shape[0] - c + 1), rng.integers(0, photo.shape[1] - c + 1)
        out[i] = probes.resize_batch(photo[None, y : y + c, x : x + c], size)[0].permute(1, 2, 0).numpy()
    return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="lite0")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else ("cpu" if args.device == "auto" else args.device)
    )
    backbone = probes.build_backbone(probes.backbone_spec(args.backbone, {"input_size": args.size}), device)
    images = probes.resize_batch(crops(args.n, args.size), args.size)
    batches = list(images.split(args.batch))
    if device.type == "cuda":
        batches = [b.pin_memory() for b in batches]
    ready = [probes.normalise(b.to(device), backbone.mean, backbone.std) for b in batches]

    def ours() -> np.ndarray:
        return probes.extract_features(backbone, batches, device=device)

    def bare() -> None:
        with torch.inference_mode():
            for x in ready:
                backbone.module(x)

    ours(), bare()  # warm-up: kernels, allocator, cudnn choices
    times = {"features": [], "bare": []}
    for _ in range(args.rounds):
        for name, fn in (("bare", bare), ("features", ours)):
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    rate = {k: args.n / min(v) for k, v in times.items()}
    print(
        f"backbone {args.backbone} ({backbone.spec.model}, {backbone.weights_source}) at {args.size}², "
        f"batch {args.batch}, {args.n} images, device {device}, torch threads {torch.get_num_threads()}"
    )
    print(f"bare batched forward:  {rate['bare']:8.1f} images/s")
    print(f"probe extract_features: {rate['features']:8.1f} images/s")
    print(f"ratio features / bare: {rate['features'] / rate['bare']:.3f} (target >= 0.9)")


if __name__ == "__main__":
    main()
