"""Start-up and steady state of the trainer on the registry's detectors, against a bare training loop; and the
loader against bare PIL decoding.

    PYTHONPATH=src .venv/bin/python bench/bench_train.py [--detectors meso4 efficientnet_b4 ...] [--size N]
        [--batch B] [--steps S] [--warmup W] [--n 1280] [--workers 4] [--device auto] [--loader]

Shards of `--n` 256² crops of real photos (JPEG q77, half labelled fake) are written once to `--workdir`.
For each detector (default on a GPU: every registered one at its own input size, i.e. the paper's, batch 32,
40 steps; on a CPU, where that would take hours: meso4 and mesoinception4, batch 8, 12 steps; `--size`
overrides the input size):
- trainer: `dfpipe.models.train.train` for `--steps` steps (one epoch, hflip, checkpoints and step log included).
  Start-up: the seconds from the call to the shards indexed, the first batch, and the first step done
  (`summary.json` `startup_s`); steady state: images/s over the steps after `--warmup`;
- bare loop: the same detector, batch size, optimizer, AMP/channels_last and cuDNN autotuning choice, on one
  batch decoded beforehand and kept on the device (no data loading at all): its first step and steady state.
Ratios printed: trainer / bare steady state (target >= 0.95) and the trainer's first step (target <= 5 s).
`--loader` adds `ShardStream` (train mode, `--workers` workers) against PIL decoding of the same bytes held in
memory, split over as many processes (target >= 0.9). Never asserts; on a shared 2-core machine rounds vary.
"""

from __future__ import annotations

import argparse
import io
import json
import tarfile
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from skimage import data

from dfpipe.data.loader import ShardStream, decode_image, make_loader, normalize
from dfpipe.data.shards import write_split
from dfpipe.io import write_json
from dfpipe.models.detectors import create_detector, list_detectors
from dfpipe.models.train import train

Q = 77


def make_shards(root: Path, n: int) -> tuple[list[Path], list[Path], list[bytes]]:
    out = root / f"q{Q}"
    if not (out / "val.counts.json").exists():
        rng = np.random.default_rng(0)
        images = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
        rows = []
        for i in range(n + 64):
            img = images[i % 4]
            side = int(rng.integers(min(img.shape[:2]) // 3, min(img.shape[:2])))
            y, x = int(rng.integers(0, img.shape[0] - side + 1)), int(rng.integers(0, img.shape[1] - side + 1))
            buf = io.BytesIO()
            Image.fromarray(img[y : y + side, x : x + side]).resize((256, 256)).save(buf, format="JPEG", quality=Q)
            split = "train" if i < n else "val"
            rows.append(
                {
                    "key": f"m{i % 2}/{i // 8:04d}",
                    "method": ["original", "Deepfakes"][i % 2],
                    "video_id": f"{i // 8:04d}",
                    "split": split,
                    "label": i % 2,
                    "frame_index": i % 8,
                    "quality": Q,
                    "jpeg": buf.getvalue(),
                }
            )
        df = pd.DataFrame(rows)
        for split, shards in (("train", 4), ("val", 1)):
            write_json(out / f"{split}.counts.json", write_split([df], Q, split, shards, out))
    train_shards, val_shards = sorted(out.glob("train-*.tar")), sorted(out.glob("val-*.tar"))
    jpegs = []
    for shard in train_shards:
        with tarfile.open(shard) as tar:
            jpegs += [tar.extractfile(m).read() for m in tar if m.name.endswith(".jpg")]  # type: ignore[union-attr]
    return train_shards, val_shards, jpegs


def bench_trainer(args, name: str, train_shards, val_shards, dev: torch.device) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = {
            "epochs": 1,
            "batch_size": args.batch,
            "max_steps_per_epoch": args.steps,
            "num_workers": args.workers,
            "checkpoint_every": 500,
            "augment": {"hflip": 0.5},
            "seed": 0,
        }
        detector = create_detector(name, input_size=args.size)
        train(detector, train_shards, val_shards, Path(tmp), settings, device=str(dev))
        summary = json.loads((Path(tmp) / "summary.json").read_text())
        log = [json.loads(ln) for ln in (Path(tmp) / "train_log.jsonl").read_text().splitlines()][args.warmup :]
    steady = len(log) * args.batch / sum(args.batch / r["images_per_s"] for r in log)
    return {**summary["startup_s"], "steady": steady}


def bench_bare_loop(args, name: str, jpegs: list[bytes], dev: torch.device) -> dict[str, float]:
    cuda = dev.type == "cuda"
    torch.backends.cudnn.benchmark = cuda  # as the trainer (not deterministic)
    # channels_last on CPU too, as the trainer (its default)
    detector = create_detector(name, input_size=args.size).to(dev, memory_format=torch.channels_last)
    size = detector.input_size
    x = (
        torch.stack(
            [
                torch.from_numpy(np.array(decode_image(j).resize((size, size)))).permute(2, 0, 1)
                for j in jpegs[: args.batch]
            ]
        )
        .contiguous(memory_format=torch.channels_last)
        .to(dev)
    )
    x = normalize(x, detector.mean, detector.std)
    y = torch.arange(args.batch, device=dev).remainder(2).float()
    opt = torch.optim.Adam(detector.parameters(), lr=2e-4, weight_decay=5e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=cuda)
    detector.train()

    def step() -> None:
        with torch.autocast(dev.type, dtype=torch.float16, enabled=cuda):
            loss = detector.loss(detector(x), y)["loss"]
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        if cuda:
            torch.cuda.synchronize()

    t = time.perf_counter()
    step()
    first = time.perf_counter() - t
    for _ in range(args.warmup - 1):
        step()
    t = time.perf_counter()
    for _ in range(args.steps - args.warmup):
        step()
    return {"first_step": first, "steady": (args.steps - args.warmup) * args.batch / (time.perf_counter() - t)}


def bench_loader(args, train_shards) -> float:
    stream = ShardStream(train_shards, batch_size=args.batch, input_size=256, train=True)
    t, n = time.perf_counter(), 0
    for _, labels in make_loader(stream, args.workers):
        n += len(labels)
    return n / (time.perf_counter() - t)


def decode_all(jpegs: list[bytes]) -> int:
    return sum(np.asarray(decode_image(j)).shape[0] > 0 for j in jpegs)


def bench_bare_decode(args, jpegs: list[bytes]) -> float:
    parts = [jpegs[i :: max(args.workers, 1)] for i in range(max(args.workers, 1))]
    t = time.perf_counter()
    if args.workers:
        with ProcessPoolExecutor(args.workers) as pool:
            n = sum(pool.map(decode_all, parts))
    else:
        n = decode_all(jpegs)
    return n / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--detectors", nargs="+")
    p.add_argument("--size", type=int, default=None, help="input size for every detector (default: its own)")
    p.add_argument("--batch", type=int)
    p.add_argument("--steps", type=int)
    p.add_argument("--warmup", type=int)
    p.add_argument("--n", type=int, default=1280)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--device", default="auto")
    p.add_argument("--loader", action="store_true", help="also the loader against bare decoding")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/dfpipe-bench-train"))
    args = p.parse_args()
    dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    gpu = dev.type == "cuda"
    args.detectors = args.detectors or (list_detectors() if gpu else ["meso4", "mesoinception4"])
    args.batch, args.steps = args.batch or (32 if gpu else 8), args.steps or (40 if gpu else 12)
    args.warmup = args.warmup or (10 if gpu else 4)
    if not 0 < args.warmup < args.steps:
        p.error("need 0 < --warmup < --steps")
    train_shards, val_shards, jpegs = make_shards(args.workdir, args.n)
    print(
        f"batch {args.batch}, {args.steps} steps (steady state after {args.warmup}), {args.workers} workers, "
        f"{dev}; {len(jpegs)} training JPEGs (256², q{Q})"
    )
    if args.loader:
        loader, decode = bench_loader(args, train_shards), bench_bare_decode(args, jpegs)
        print(f"loader {loader:.1f} images/s, bare decode {decode:.1f} images/s: {loader / decode:.2f} (target >= 0.9)")
    print(
        f"{'detector':<16} {'size':>4} | trainer start-up s: {'index':>5} {'batch':>5} {'step':>5} | bare step s | "
        f"images/s: {'trainer':>8} {'bare':>8} {'ratio':>5}"
    )
    for name in args.detectors:
        size = args.size or create_detector(name).input_size
        trainer = bench_trainer(args, name, train_shards, val_shards, dev)
        bare = bench_bare_loop(args, name, jpegs, dev)
        print(
            f"{name:<16} {size:>4} | {'':>19}{trainer['index']:>5.2f} {trainer['first_batch']:>5.2f} "
            f"{trainer['first_step']:>5.2f} | {bare['first_step']:>11.2f} | {'':>10}{trainer['steady']:>8.1f} "
            f"{bare['steady']:>8.1f} {trainer['steady'] / bare['steady']:>5.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
