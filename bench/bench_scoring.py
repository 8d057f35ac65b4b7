"""Where a demo predict/train job's time goes (the demo's time budget), on the shards of a built dataset.

Prints, for one detector spec:
- predict: `dfpipe.evaluation.predict.predict` images/s on the test shards of one quality, per loader-worker count and
  batch size, against a bare batched forward (inference_mode, channels_last) over the same decoded tensors
  already in memory: the ratio is what decoding, resizing, normalising and bookkeeping cost; then the same
  predict with the frozen graph the predict rule uses on CPU (`predict.frozen`, its tracing time printed
  apart) and its speed-up over eager mode;
- train: the trainer's steady-state time per step (median over steps after the first two) and its start-up
  (summary.json), for a few steps on the train shards.

    python bench/bench_scoring.py --shards data/shards/q95 [--model tf_efficientnet_lite0 --size 128]

Run it on an otherwise idle machine: on shared cores the figures move ~3x; compare within one run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from dfpipe.data.loader import make_loader, normalize
from dfpipe.evaluation import predict
from dfpipe.models import experiments, train


def bare_forward(detector, images: torch.Tensor, batch_size: int) -> float:
    """Images/s of the model alone: normalise + forward of in-memory uint8 batches, channels_last."""
    detector.eval().to(memory_format=torch.channels_last)
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(images), batch_size):
            x = normalize(
                images[i : i + batch_size].contiguous(memory_format=torch.channels_last), detector.mean, detector.std
            )
            detector(x)
    return len(images) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=Path, default=Path("data/shards/q95"))
    parser.add_argument("--model", default="tf_efficientnet_lite0")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the rules' `threads`)")
    parser.add_argument("--train-steps", type=int, default=8, help="0: skip the training measurement")
    parser.add_argument("--train-batch", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    spec = {"name": "bench", "model": args.model, "pretrained": "none", "input_size": args.size}
    detector = experiments.build_detector(spec)
    test = sorted(args.shards.glob("test-*.tar"))
    if not test:
        raise SystemExit(f"no test-*.tar in {args.shards}: give --shards a built dataset's shards/q<Q> folder")

    stream = predict.eval_stream(detector, test, max(args.batch_sizes))
    images = torch.cat([batch[0] for batch in make_loader(stream, 0)])
    print(f"{args.model} at {args.size} px, {len(images)} test images of {args.shards}, {args.threads} threads")
    start = time.perf_counter()
    graph = predict.frozen(detector)
    print(f"frozen graph traced in {time.perf_counter() - start:.2f} s (once per predict job)")

    def predict_rate(bs: int, workers: int, run) -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            n = len(predict.predict(detector, test, device="cpu", batch_size=bs, num_workers=workers, run=run))
        return n / (time.perf_counter() - start)

    for bs in args.batch_sizes:
        for workers in args.workers:
            bare = bare_forward(detector, images, bs)  # right before each predict: load on shared cores drifts
            eager, fast = predict_rate(bs, workers, None), predict_rate(bs, workers, graph)
            print(
                f"predict batch {bs:4d} workers {workers}: {eager:7.1f} img/s; bare forward {bare:7.1f} img/s; "
                f"ratio {eager / bare:.2f}; frozen graph {fast:7.1f} img/s, {fast / eager:.2f}x eager"
            )

    if not args.train_steps:
        return
    train_shards = sorted(args.shards.glob("train-*.tar"))
    val = sorted(args.shards.glob("val-*.tar"))
    with tempfile.TemporaryDirectory() as out:
        settings = {
            "epochs": 1,
            "max_steps_per_epoch": args.train_steps,
            "batch_size": args.train_batch,
            "lr": 1e-3,
            "seed": 0,
            "checkpoint_every": 10_000,
            "augment": {},
        }
        train.train_job(
            {
                "spec": spec,
                "settings": settings,
                "methods": "all",
                "train": train_shards,
                "val": val,
                "out_dir": out,
                "device": "cpu",
            },
        )
        steps = [json.loads(line) for line in (Path(out) / "train_log.jsonl").read_text().splitlines()]
        summary = json.loads((Path(out) / "summary.json").read_text())
    per_step = statistics.median(args.train_batch / s["images_per_s"] for s in steps[2:] or steps)
    print(
        f"train batch {args.train_batch}: {per_step:.2f} s/step steady state over {len(steps)} steps; "
        f"start-up {json.dumps(summary.get('startup_s', {}))}"
    )


if __name__ == "__main__":
    main()
