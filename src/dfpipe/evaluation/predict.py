"""Scores of a detector on shards (the `predict` rule's module; the trainer's validation uses it too)."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Collection, Sequence
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from dfpipe.data.loader import ShardStream, make_loader, normalize

META_COLUMNS = ("video_key", "method", "video_id", "frame_index")

logger = logging.getLogger(__name__)


def pick_device(device: str, local_rank: int = 0) -> torch.device:
    if device == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def eval_stream(
    detector: nn.Module,
    shards: Sequence[Path],
    batch_size: int = 64,
    methods: Sequence[str] | None = None,
    samples: Collection[str] | None = None,
) -> ShardStream:
    """The evaluation stream of `shards` at the detector's input size (index once, score many times); only the
    samples of `methods`, or only the sample keys `samples`, when given."""
    return ShardStream(
        shards,
        batch_size=batch_size,
        input_size=detector.input_size,
        train=False,
        methods=methods,
        ela=getattr(detector, "ela", None),
        samples=samples,
    )


class _LogitsAndFeatures(nn.Module):
    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.detector.logits_and_features(x)


def frozen(detector: nn.Module) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """The eval-mode detector's `logits_and_features` as a frozen TorchScript graph, for CPU inference.

    Freezing folds BatchNorm and constant paddings into the convolutions: Lite0 and MobileNetV2 predict ~1.5x
    faster than in eager mode on 2 cores, ResNet-18 ~1.1x, the Meso nets (decode-bound, BatchNorm after ReLU)
    alike (bench/bench_scoring.py), for well under a second of tracing; scores agree with eager mode to float
    rounding. Worth it where a model scores thousands of images, not for one validation pass. A detector that
    cannot be traced runs as it is (logged)."""
    size = detector.input_size
    example = torch.zeros(2, 3, size, size).contiguous(memory_format=torch.channels_last)  # the loader's layout
    try:
        # TorchScript is deprecated in favour of torch.compile, whose compile time (tens of seconds on 2 cores)
        # exceeds what it would save in a predict job; its warnings here say nothing to act on.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return torch.jit.freeze(torch.jit.trace(_LogitsAndFeatures(detector).eval(), example, check_trace=False))
    except (RuntimeError, torch.jit.Error) as exn:  # e.g. control flow on tensor values
        logger.warning("%s runs without a frozen graph (tracing failed: %s)", type(detector).__name__, exn)
        return detector.logits_and_features


@torch.no_grad()
def score(
    detector: nn.Module,
    stream: ShardStream,
    device: torch.device,
    features: bool = False,
    num_workers: int = 0,
    amp: bool = False,
    run: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> pd.DataFrame:
    """Scores (sigmoid of the logit) of every sample of an evaluation `stream` in loader order, with its
    metadata. With `features`, a `features` column holds each sample's feature vector (spatially averaged
    when the detector returns maps), e.g. for t-SNE. `run`: what computes (logits, features) of a normalised
    batch, unless given (e.g. the detector's `frozen` graph): its `logits_and_features`, or its forward alone
    when no features are asked for."""
    was_training = detector.training
    detector.to(device).eval()  # built on the CPU by the scripts; a no-op where it already is on `device`
    rows: list[pd.DataFrame] = []
    run = run or (detector.logits_and_features if features else lambda x: (detector(x), None))
    try:
        for images, labels, meta in make_loader(stream, num_workers, pin_memory=device.type == "cuda"):
            images = normalize(images.to(device, non_blocking=True), detector.mean, detector.std)
            with torch.autocast(device.type, dtype=torch.float16, enabled=amp and device.type == "cuda"):
                logits, feats = run(images)
            feats = feats if features else None
            part = pd.DataFrame({k: meta[k] for k in META_COLUMNS})
            part["label"] = labels.int().numpy()
            part["score"] = torch.sigmoid(logits.float()).cpu().numpy()
            if feats is not None:
                flat = feats.float().flatten(2).mean(2) if feats.ndim > 2 else feats.float()
                part["features"] = list(flat.cpu().numpy())
            rows.append(part)
    finally:
        detector.train(was_training)
    return pd.concat(rows, ignore_index=True)


def predict(
    detector: nn.Module,
    shards: Sequence[Path],
    device: str | torch.device = "auto",
    batch_size: int = 64,
    features: bool = False,
    num_workers: int = 0,
    amp: bool = False,
    methods: Sequence[str] | None = None,
    run: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> pd.DataFrame:
    """`score` on `shards` (only samples of `methods` when given)."""
    dev = pick_device(device) if isinstance(device, str) else device
    stream = eval_stream(detector, shards, batch_size, methods)
    return score(detector, stream, dev, features, num_workers, amp, run)
