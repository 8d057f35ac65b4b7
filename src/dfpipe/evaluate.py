"""Scores of a detector on shards (the `predict` rule's module; the trainer's validation uses it too)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from .loader import ShardStream, make_loader, normalize

META_COLUMNS = ("video_key", "method", "video_id", "frame_index")


def pick_device(device: str, local_rank: int = 0) -> torch.device:
    if device == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def eval_stream(
    detector: nn.Module, shards: Sequence[Path], batch_size: int = 64, methods: Sequence[str] | None = None
) -> ShardStream:
    """The evaluation stream of `shards` at the detector's input size (index once, score many times)."""
    return ShardStream(
        shards,
        batch_size=batch_size,
        input_size=detector.input_size,
        train=False,
        methods=methods,
        ela=getattr(detector, "ela", None),
    )


@torch.no_grad()
def score(
    detector: nn.Module,
    stream: ShardStream,
    device: torch.device,
    features: bool = False,
    num_workers: int = 0,
    amp: bool = False,
) -> pd.DataFrame:
    """Scores (sigmoid of the logit) of every sample of an evaluation `stream` in loader order, with its
    metadata. With `features`, a `features` column holds each sample's feature vector (spatially averaged
    when the detector returns maps), e.g. for t-SNE."""
    was_training = detector.training
    detector.eval()
    rows: list[pd.DataFrame] = []
    try:
        for images, labels, meta in make_loader(stream, num_workers, pin_memory=device.type == "cuda"):
            images = normalize(images.to(device, non_blocking=True), detector.mean, detector.std)
            with torch.autocast(device.type, dtype=torch.float16, enabled=amp and device.type == "cuda"):
                logits, feats = detector.logits_and_features(images) if features else (detector(images), None)
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
) -> pd.DataFrame:
    """`score` on `shards` (only samples of `methods` when given)."""
    dev = pick_device(device) if isinstance(device, str) else device
    return score(detector, eval_stream(detector, shards, batch_size, methods), dev, features, num_workers, amp)
