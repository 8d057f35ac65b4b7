"""The trainer's CUDA paths: AMP and channels_last training, every detector under autocast, deterministic
kill-and-resume on the GPU, and GPU predictions agreeing with CPU ones.

Skipped where there is no CUDA device (CI has none); on a GPU machine: `pytest tests/test_cuda.py`.
"""

from __future__ import annotations

import json

import pytest
import torch
from test_train import SETTINGS, Killed, TinyDetector, fresh, kill_after, shards  # noqa: F401 (fixture)

from dfpipe.evaluation.predict import predict
from dfpipe.models.detectors import create_detector, list_detectors
from dfpipe.models.train import train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


class DtypeRecorder(TinyDetector):
    """Records the dtype its convolution computes in, to see autocast at work."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[torch.dtype] = set()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        self.seen.add(out.dtype)
        return out


def test_amp_and_channels_last_training_learns(shards, tmp_path) -> None:
    torch.manual_seed(0)
    detector = DtypeRecorder()
    train(
        detector,
        *shards,
        tmp_path,
        {**SETTINGS, "epochs": 5, "max_steps_per_epoch": None},
        device="cuda",
    )
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["device"].startswith("cuda") and summary["best_val_auc"] == 1.0
    assert torch.float16 in detector.seen  # autocast ran the convolution in half precision
    conv = detector.body[0].weight
    assert conv.is_cuda and conv.is_contiguous(memory_format=torch.channels_last)
    scaler = torch.load(tmp_path / "last.pt", weights_only=False)["scaler"]
    assert scaler and scaler["scale"] > 0  # the grad scaler was on and is checkpointed


@pytest.mark.parametrize("name", list_detectors())
def test_every_detector_trains_under_autocast(name: str) -> None:
    detector = create_detector(name).cuda().to(memory_format=torch.channels_last).train()
    size = detector.input_size
    x = torch.randn(4, 3, size, size, device="cuda").contiguous(memory_format=torch.channels_last)
    y = torch.tensor([0.0, 1.0, 0.0, 1.0], device="cuda")
    trainable = [p for p in detector.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in trainable]
    optimizer = torch.optim.Adam(trainable, lr=1e-4)
    scaler = torch.amp.GradScaler("cuda")
    for _ in range(20):  # the scaler skips steps whose float16 gradients overflow, and lowers its scale
        with torch.autocast("cuda", dtype=torch.float16):
            logits = detector(x)
            loss = detector.loss(logits, y)["loss"]
        assert torch.isfinite(logits.float()).all() and torch.isfinite(loss), name
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    assert all(torch.isfinite(p).all() for p in trainable)
    changed = sum(not torch.equal(p, b) for p, b in zip(trainable, before))
    assert changed == len(trainable), f"{name}: {len(trainable) - changed} parameter tensors never updated"


@pytest.mark.parametrize("kill_at", [3, 5])
def test_killed_run_resumes_to_the_same_weights_on_cuda(shards, tmp_path, kill_at) -> None:
    settings = {**SETTINGS, "deterministic": True}
    reference = tmp_path / "reference"
    train(fresh(), *shards, reference, settings, device="cuda")
    resumed = tmp_path / "resumed"
    with pytest.raises(Killed):
        train(fresh(), *shards, resumed, settings, device="cuda", on_step=kill_after(kill_at))
    train(fresh(), *shards, resumed, settings, device="cuda")
    ours, theirs = (torch.load(d / "last.pt", weights_only=False) for d in (resumed, reference))
    for key, value in theirs["model"].items():
        assert torch.equal(ours["model"][key], value), key
    assert ours["val_auc"] == theirs["val_auc"]


def test_gpu_predictions_agree_with_cpu(shards) -> None:
    detector = fresh()
    on_cpu = predict(detector, shards[1], device="cpu", batch_size=3)
    on_gpu = predict(detector.cuda(), shards[1], device="cuda", batch_size=3, amp=True)
    assert on_gpu.drop(columns="score").equals(on_cpu.drop(columns="score"))
    assert (on_gpu["score"] - on_cpu["score"]).abs().max() < 1e-2  # float16 autocast
