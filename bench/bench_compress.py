"""Throughput of the jpeg stage against bare cjpeg calls on the same crops and with the same parallelism.

    PYTHONPATH=src .venv/bin/python bench/bench_compress.py [--n 300] [--threads 2] [--quality 77]

compress_batch does the stage's real work (PNG decode, PPM on stdin, JPEG on stdout, table assembly);
the baseline only runs `cjpeg -quality Q -outfile x.jpg x.ppm` on PPM files written beforehand.
A third line, encode() on arrays decoded beforehand, separates the subprocess plumbing from PNG decoding.
All are timed in the same run, alternating, and the best round of each is reported. Prints, never asserts.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from skimage import data

from dfpipe.data.compress import compress_batch, encode, to_ppm
from dfpipe.tools import cjpeg_version, find_cjpeg


def real_crops(n: int, size: int, seed: int = 0) -> list[np.ndarray]:
    """`n` size² crops of real photos (faces, a cat, a coffee cup) at random places and scales."""
    rng = np.random.default_rng(seed)
    images = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    crops = []
    for i in range(n):
        img = images[i % len(images)]
        h, w = img.shape[:2]
        side = int(rng.integers(min(h, w) // 3, min(h, w)))
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        crop = Image.fromarray(img[y : y + side, x : x + side]).resize((size, size), Image.Resampling.LANCZOS)
        crops.append(np.asarray(crop))
    return crops


def faces_table(crops: list[np.ndarray]) -> pd.DataFrame:
    rows = []
    for i, crop in enumerate(crops):
        buf = io.BytesIO()
        Image.fromarray(crop).save(buf, format="PNG")
        rows.append(
            {
                "key": f"original/{i // 32:03d}",
                "method": "original",
                "video_id": f"{i // 32:03d}",
                "split": "train",
                "label": 0,
                "frame_index": i % 32,
                "status": "ok",
                "crop_png": buf.getvalue(),
            }
        )
    return pd.DataFrame(rows)


def bare_cjpeg(cjpeg: Path, ppms: list[Path], quality: int, threads: int) -> None:
    def run(ppm: Path) -> None:
        cmd = [str(cjpeg), "-quality", str(quality), "-outfile", str(ppm.with_suffix(".jpg")), str(ppm)]
        subprocess.run(cmd, check=True)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(run, ppms))


def encode_arrays(cjpeg: Path, crops: list[np.ndarray], quality: int, threads: int) -> None:
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(lambda rgb: encode(rgb, quality, [], cjpeg), crops))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=300, help="number of crops")
    parser.add_argument("--size", type=int, default=256, help="crop side in pixels")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quality", type=int, default=77)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    cjpeg = find_cjpeg()
    crops = real_crops(args.n, args.size)
    faces = faces_table(crops)
    with tempfile.TemporaryDirectory(prefix="bench_compress.") as tmp:
        ppms = []
        for i, crop in enumerate(crops):
            ppms.append(Path(tmp) / f"{i:05d}.ppm")
            ppms[-1].write_bytes(to_ppm(crop))

        best = {"compress_batch": float("inf"), "bare cjpeg": float("inf"), "encode() only": float("inf")}
        compress_batch(faces.iloc[:8], args.quality, [], cjpeg, args.threads)  # warm caches, version probe
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            out = compress_batch(faces, args.quality, [], cjpeg, args.threads)
            best["compress_batch"] = min(best["compress_batch"], time.perf_counter() - t0)
            t0 = time.perf_counter()
            bare_cjpeg(cjpeg, ppms, args.quality, args.threads)
            best["bare cjpeg"] = min(best["bare cjpeg"], time.perf_counter() - t0)
            t0 = time.perf_counter()
            encode_arrays(cjpeg, crops, args.quality, args.threads)
            best["encode() only"] = min(best["encode() only"], time.perf_counter() - t0)
        same = all(out["jpeg"].iloc[i] == ppms[i].with_suffix(".jpg").read_bytes() for i in range(len(ppms)))

    rate = {k: args.n / v for k, v in best.items()}
    print(f"encoder: {cjpeg_version(cjpeg)} -quality {args.quality}")
    print(f"crops: {args.n} × {args.size}², threads: {args.threads}, best of {args.rounds} rounds")
    for k, r in rate.items():
        print(f"{k:>15}: {r:7.1f} images/s ({best[k]:.3f} s)")
    print(f"{'ratio':>15}: {rate['compress_batch'] / rate['bare cjpeg']:.3f} (compress_batch / bare; target >= 0.8)")
    print(
        f"{'':>15}  {rate['encode() only'] / rate['bare cjpeg']:.3f} (encode() only / bare: plumbing without PNG decode)"
    )
    print(f"{'same bytes':>15}: {same} (stdin/stdout path vs files path)")
    print(f"{'mean size':>15}: {out['bytes'].mean():.0f} bytes, {8 * out['bytes'].mean() / args.size**2:.3f} bpp")


if __name__ == "__main__":
    main()
