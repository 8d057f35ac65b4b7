"""Multi-epoch CPU training with the decoded-crop cache (the trainer's default on CPU) against loader workers
decoding every epoch (`decoded_cache_mb: 0`), on the same shards and settings.

    PYTHONPATH=src .venv/bin/python bench/bench_decoded_cache.py [--detectors meso4 mesoinception4]
        [--size 128] [--batch 32] [--steps 25] [--epochs 6] [--threads 1] [--n 1536]

Shards as in bench_train.py (`--n` 256² crops of real photos, JPEG q77). For each detector, both modes train
for `--epochs` epochs of `--steps` steps with one validation pass per epoch, torch on `--threads` threads, and
print wall seconds and CPU seconds of the process and its loader workers together: on a machine whose cores
other jobs share (the demo runs two model jobs on two cores), CPU seconds are what a mode costs the others.
Also printed: whether both modes end with identical weights (they must: the cache changes where crops are
decoded, not what they are). Never asserts on timings.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import torch
from bench_train import make_shards

from dfpipe.models.detectors import create_detector
from dfpipe.models.train import train


def cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run(args, name: str, shards, cache_mb: int | None) -> tuple[float, float, dict[str, torch.Tensor]]:
    settings = {
        "epochs": args.epochs,
        "batch_size": args.batch,
        "max_steps_per_epoch": args.steps,
        "checkpoint_every": 10_000,
        "augment": {"hflip": 0.5},
        "seed": 0,
        **({} if cache_mb is None else {"decoded_cache_mb": cache_mb}),
    }
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        detector = create_detector(name, input_size=args.size)
        wall, cpu = time.perf_counter(), cpu_seconds()
        train(detector, *shards, Path(tmp), settings, device="cpu")
        wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
        weights = torch.load(Path(tmp) / "last.pt", weights_only=True)["model"]
    return wall, cpu, weights


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--detectors", nargs="+", default=["meso4", "mesoinception4"])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n", type=int, default=1536)
    # not bench_train.py's folder: shards written there for another --n would be reused
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/dfpipe-bench-cache"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    train_shards, val_shards, _ = make_shards(args.workdir, args.n)
    for name in args.detectors:
        workers_wall, workers_cpu, a = run(args, name, (train_shards, val_shards), 0)
        cache_wall, cache_cpu, b = run(args, name, (train_shards, val_shards), None)
        same = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        print(
            f"{name} @ {args.size}px, {args.epochs} epochs x {args.steps} steps, {args.threads} thread(s): "
            f"workers {workers_wall:.1f} s wall / {workers_cpu:.1f} s CPU; cache {cache_wall:.1f} s / "
            f"{cache_cpu:.1f} s; cache/workers CPU {cache_cpu / workers_cpu:.2f}x, wall "
            f"{cache_wall / workers_wall:.2f}x; same weights: {same}",
            flush=True,
        )


if __name__ == "__main__":
    main()
