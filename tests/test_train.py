"""Trainer: learns an easy task, checkpoints everything, resumes after a kill to the same weights, keeps the
best epoch by validation AUC, logs every step; predict returns scores with metadata in loader order."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from dfpipe.experiments import train_job
from dfpipe.train import predict, train
from test_loader import make_shards, videos


class TinyDetector(nn.Module):
    """Stands in for a registry detector: same attributes, a few hundred parameters, dropout to use the RNG."""

    name = "tiny"
    input_size = 16
    mean = (0.5, 0.5, 0.5)
    std = (0.5, 0.5, 0.5)

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(4, 1))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits_and_features(x)[0]

    def logits_and_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.features(x)
        return self.head(feats.mean((2, 3))).squeeze(1), feats

    def extra_loss(self) -> torch.Tensor:
        return 1e-3 * self.head[1].weight.square().sum()


def fresh() -> TinyDetector:
    torch.manual_seed(0)
    return TinyDetector()


SETTINGS = {"epochs": 2, "batch_size": 4, "lr": 0.05, "seed": 7, "checkpoint_every": 2, "num_workers": 0,
            "max_steps_per_epoch": 3, "augment": {"hflip": 0.5, "jpeg": 0.5}}


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> tuple[list[Path], list[Path]]:
    root = tmp_path_factory.mktemp("shards")
    # dark real faces, bright fake ones (see test_loader.sample_image): an easy task
    return (make_shards(root, "train", videos(3, 3)),
            make_shards(root, "val", videos(2, 2, offset=100), frames=2, n_shards=1, first=100))


@pytest.fixture(scope="module")
def reference(shards, tmp_path_factory) -> Path:
    """An uninterrupted run."""
    out = tmp_path_factory.mktemp("reference")
    train(fresh(), *shards, out, SETTINGS, device="cpu", log=lambda _: None)
    return out


class Killed(Exception):
    pass


def kill_after(step: int):
    def hook(record: dict) -> None:
        if record["step"] == step:
            raise Killed

    return hook


def test_loss_decreases_on_an_easy_task(shards, tmp_path) -> None:
    train(fresh(), *shards, tmp_path, {**SETTINGS, "epochs": 5, "max_steps_per_epoch": None}, device="cpu",
          log=lambda _: None)
    losses = [json.loads(ln)["loss"] for ln in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert len(losses) == 5 * 4  # 2 × 9 samples / 4 per batch = 4 steps per epoch
    assert sum(losses[-4:]) / 4 < 0.5 * sum(losses[:4]) / 4
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["best_val_auc"] == 1.0


def test_checkpoint_holds_everything_to_resume(reference) -> None:
    ckpt = torch.load(reference / "last.pt", weights_only=False)
    assert {"model", "optimizer", "scheduler", "scaler", "rng", "epoch", "position", "step", "best_val_auc",
            "best_epoch", "val_auc", "settings", "detector"} <= set(ckpt)
    assert set(ckpt["rng"]) == {"python", "numpy", "torch", "cuda"}
    assert (ckpt["epoch"], ckpt["position"], ckpt["step"]) == (2, 0, 6)
    assert ckpt["optimizer"]["state"] and ckpt["scheduler"]["last_epoch"] == 6
    assert ckpt["detector"] == "tiny" and ckpt["settings"]["lr"] == 0.05


@pytest.mark.parametrize("kill_at", [3, 5])
def test_killed_run_resumes_to_the_same_weights(shards, reference, tmp_path, kill_at) -> None:
    # checkpoints at steps 2 and 4 and at each epoch end (step 3, 6): step 3 dies before its epoch-end
    # checkpoint and validation, step 5 in the middle of the second epoch
    with pytest.raises(Killed):
        train(fresh(), *shards, tmp_path, SETTINGS, device="cpu", log=lambda _: None, on_step=kill_after(kill_at))
    assert torch.load(tmp_path / "last.pt", weights_only=False)["step"] == kill_at - 1
    messages: list[str] = []
    train(fresh(), *shards, tmp_path, SETTINGS, device="cpu", log=messages.append)
    assert "resuming" in messages[0]
    ours, theirs = (torch.load(d / "last.pt", weights_only=False) for d in (tmp_path, reference))
    for key, value in theirs["model"].items():
        assert torch.equal(ours["model"][key], value), key
    assert ours["val_auc"] == theirs["val_auc"]
    log = [json.loads(ln) for ln in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    ref = [json.loads(ln) for ln in (reference / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 7))  # the re-run steps replace the lost ones
    assert [r["loss"] for r in log] == [r["loss"] for r in ref]


def test_best_checkpoint_is_the_best_validation_epoch(shards, reference) -> None:
    summary = json.loads((reference / "summary.json").read_text())
    aucs = summary["val_auc"]
    assert len(aucs) == 2 and summary["best_val_auc"] == max(aucs)
    assert summary["best_epoch"] == aucs.index(max(aucs)) + 1  # earliest of equal epochs
    best = torch.load(reference / "best.pt", weights_only=False)
    assert best["epoch"] == summary["best_epoch"] and best["detector"] == "tiny"
    model = TinyDetector()
    model.load_state_dict(best["model"])
    scores = predict(model, shards[1], device="cpu", batch_size=3)
    assert roc_auc_score(scores["label"], scores["score"]) == pytest.approx(best["val_auc"])


def test_step_log_has_every_step(reference) -> None:
    lines = [json.loads(ln) for ln in (reference / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == list(range(1, 7)) and [r["epoch"] for r in lines] == [1] * 3 + [2] * 3
    assert all(set(r) == {"step", "epoch", "loss", "lr", "images_per_s"} for r in lines)
    assert lines[0]["lr"] == 0.05 and lines[-1]["lr"] < lines[0]["lr"]  # cosine decay, stepped per iteration
    assert all(r["images_per_s"] > 0 and r["loss"] > 0 for r in lines)


def test_rerun_of_a_finished_run_changes_nothing(shards, reference) -> None:
    before = (reference / "best.pt").stat().st_mtime_ns
    assert train(fresh(), *shards, reference, SETTINGS, device="cpu", log=lambda _: None) == reference / "best.pt"
    assert (reference / "best.pt").stat().st_mtime_ns == before


def test_other_settings_refuse_to_resume(shards, reference) -> None:
    with pytest.raises(ValueError, match="last.pt: written by another run"):
        train(fresh(), *shards, reference, {**SETTINGS, "lr": 0.1}, device="cpu")


def test_predict_returns_metadata_scores_and_features(shards) -> None:
    scores = predict(fresh(), shards[1], device="cpu", batch_size=3, features=True)
    assert list(scores.columns) == ["video_key", "method", "video_id", "frame_index", "label", "score", "features"]
    assert len(scores) == 8 and scores["score"].between(0, 1).all()
    assert scores["video_key"].iloc[0].startswith(("original/q77/", "Deepfakes/q77/"))
    assert scores["features"].iloc[0].shape == (4,)
    assert (scores["label"] == scores["method"].eq("Deepfakes").astype(int)).all()


def test_a_job_gives_the_same_weights_in_any_process(shards, tmp_path) -> None:
    """The pipeline's entry point seeds the initial weights too: two runs of one job are identical, whatever the
    process drew from the RNG before."""
    job = {"spec": {"name": "meso4", "model": "meso4", "pretrained": "none", "input_size": 64},
           "settings": {**SETTINGS, "epochs": 1}, "methods": "all", "device": "cpu",
           "train": [str(p) for p in shards[0]], "val": [str(p) for p in shards[1]]}
    weights = []
    for run in range(2):
        torch.manual_seed(run)
        best = train_job({**job, "out_dir": str(tmp_path / f"run{run}")}, log=lambda _: None)
        weights.append(torch.load(best, weights_only=False)["model"])
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
