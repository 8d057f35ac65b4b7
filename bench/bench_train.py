"""Throughput of the trainer against a bare timm training loop, and of the loader against bare PIL decoding.

    PYTHONPATH=src .venv/bin/python bench/bench_train.py [--model mobilenetv3_small_050] [--size 256] [--batch 32]
        [--steps 20] [--n 640] [--workers 2] [--device auto]

Shards of `--n` 256² crops of real photos (JPEG q77, half labelled fake) are written once to `--workdir`.
- trainer: `dfpipe.train.train` for `--steps` steps (one epoch, hflip only, its checkpointing and per-step
  log included), images/s from its own step log after 3 warm-up steps;
- bare loop: the same timm model, batch size, optimizer, AMP/channels_last choice, on one batch decoded
  beforehand and kept on the device (an upper bound: no data loading at all);
- loader: `ShardStream` in training mode (shuffle, balance, decode, hflip, resize, batch: uint8) with
  `--workers` workers, against PIL decoding of the same JPEG bytes held in memory, split over as many
  processes.
Prints figures and the ratios trainer / bare loop (target ≥ 0.95) and loader / bare decode (target ≥ 0.9).
Never asserts. On a shared 2-core machine rounds vary a lot: each figure is the best of `--rounds`.
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
import timm
import torch
import torch.nn.functional as F
from PIL import Image
from skimage import data
from torch import nn

from dfpipe.loader import ShardStream, decode_image, make_loader
from dfpipe.shards import write_split
from dfpipe.train import train

Q = 77


class TimmDetector(nn.Module):
    """The registry's interface around a timm model (the registry may not exist yet)."""

    def __init__(self, model: str, size: int) -> None:
        super().__init__()
        self.name, self.input_size, self.mean, self.std = model, size, (0.5,) * 3, (0.5,) * 3
        self.net = timm.create_model(model, pretrained=False, num_classes=1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loss": F.binary_cross_entropy_with_logits(logits.float(), labels)}


def make_shards(root: Path, n: int) -> tuple[list[Path], list[Path], list[bytes]]:
    out = root / f"q{Q}"
    if not (out / "train-0000.tar").exists():
        rng = np.random.default_rng(0)
        images = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
        rows = []
        for i in range(n + 64):
            img = images[i % 4]
            side = int(rng.integers(min(img.shape[:2]) // 3, min(img.shape[:2])))
            y, x = int(rng.integers(0, img.shape[0] - side + 1)), int(rng.integers(0, img.shape[1] - side + 1))
            buf = io.BytesIO()
            Image.fromarray(img[y:y + side, x:x + side]).resize((256, 256)).save(buf, format="JPEG", quality=Q)
            split = "train" if i < n else "val"
            rows.append({"key": f"m{i % 2}/{i // 8:04d}", "method": ["original", "Deepfakes"][i % 2],
                         "video_id": f"{i // 8:04d}", "split": split, "label": i % 2, "frame_index": i % 8,
                         "quality": Q, "jpeg": buf.getvalue()})
        df = pd.DataFrame(rows)
        write_split([df], Q, "train", 4, out)
        write_split([df], Q, "val", 1, out)
    train_shards, val_shards = sorted(out.glob("train-*.tar")), sorted(out.glob("val-*.tar"))
    jpegs = []
    for shard in train_shards:
        with tarfile.open(shard) as tar:
            jpegs += [tar.extractfile(m).read() for m in tar if m.name.endswith(".jpg")]  # type: ignore[union-attr]
    return train_shards, val_shards, jpegs


def bench_trainer(args, train_shards, val_shards, dev: torch.device) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        settings = {"epochs": 1, "batch_size": args.batch, "max_steps_per_epoch": args.steps,
                    "num_workers": args.workers, "checkpoint_every": 500, "augment": {"hflip": 0.5}, "seed": 0}
        train(TimmDetector(args.model, args.size), train_shards, val_shards, Path(tmp), settings,
              device=str(dev), log=lambda _: None)
        log = [json.loads(ln) for ln in (Path(tmp) / "train_log.jsonl").read_text().splitlines()][3:]
    return len(log) * args.batch / sum(args.batch / r["images_per_s"] for r in log)


def bench_bare_loop(args, jpegs: list[bytes], dev: torch.device) -> float:
    cuda = dev.type == "cuda"
    model = TimmDetector(args.model, args.size).to(dev)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    x = torch.stack([torch.from_numpy(np.array(decode_image(j).resize((args.size, args.size)))).permute(2, 0, 1)
                     for j in jpegs[:args.batch]]).float().div(127.5).sub(1).to(dev)
    x = x.contiguous(memory_format=torch.channels_last)  # the layout the loader's batches have
    y = torch.arange(args.batch, device=dev).remainder(2).float()
    opt = torch.optim.Adam(model.parameters(), lr=2e-4, weight_decay=5e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=cuda)

    def step() -> None:
        with torch.autocast(dev.type, dtype=torch.float16, enabled=cuda):
            loss = F.binary_cross_entropy_with_logits(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    for _ in range(3):
        step()
    if cuda:
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(args.steps - 3):
        step()
    if cuda:
        torch.cuda.synchronize()
    return (args.steps - 3) * args.batch / (time.perf_counter() - t)


def bench_loader(args, train_shards) -> float:
    stream = ShardStream(train_shards, batch_size=args.batch, input_size=args.size, train=True)
    t, n = time.perf_counter(), 0
    for _, labels in make_loader(stream, args.workers):
        n += len(labels)
    return n / (time.perf_counter() - t)


def decode_all(jpegs: list[bytes]) -> int:
    return sum(np.asarray(decode_image(j)).shape[0] > 0 for j in jpegs)


def bench_bare_decode(args, jpegs: list[bytes]) -> float:
    parts = [jpegs[i::max(args.workers, 1)] for i in range(max(args.workers, 1))]
    t = time.perf_counter()
    if args.workers:
        with ProcessPoolExecutor(args.workers) as pool:
            n = sum(pool.map(decode_all, parts))
    else:
        n = decode_all(jpegs)
    return n / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="mobilenetv3_small_050")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--n", type=int, default=640)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/dfpipe-bench-train"))
    args = p.parse_args()
    dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    train_shards, val_shards, jpegs = make_shards(args.workdir, args.n)
    print(f"{args.model} at {args.size}², batch {args.batch}, {args.steps} steps, {args.workers} workers, {dev}; "
          f"{len(jpegs)} training JPEGs (256², q{Q})")
    loader = max(bench_loader(args, train_shards) for _ in range(args.rounds))
    decode = max(bench_bare_decode(args, jpegs) for _ in range(args.rounds))
    print(f"loader       {loader:8.1f} images/s   (shuffle, balance, decode, hflip, resize, batch: uint8)")
    print(f"bare decode  {decode:8.1f} images/s   (PIL decode of the same bytes, in memory)")
    print(f"loader / bare decode = {loader / decode:.2f}   (target >= 0.9)")
    trainer = max(bench_trainer(args, train_shards, val_shards, dev) for _ in range(args.rounds))
    bare = max(bench_bare_loop(args, jpegs, dev) for _ in range(args.rounds))
    print(f"trainer      {trainer:8.1f} images/s   (dfpipe.train: loader, AMP/channels_last on CUDA, per-step log)")
    print(f"bare loop    {bare:8.1f} images/s   (timm model on one in-memory batch)")
    print(f"trainer / bare loop = {trainer / bare:.2f}   (target >= 0.95)")


if __name__ == "__main__":
    main()
