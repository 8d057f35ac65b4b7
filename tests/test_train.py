"""Trainer: learns an easy task, checkpoints everything, resumes after a kill to the same weights, keeps the
best epoch by validation AUC, logs every step; predict returns scores with metadata in loader order."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from logcapture import dfpipe_lines
from sklearn.metrics import roc_auc_score
from test_loader import make_shards, videos
from torch import nn

from dfpipe import config as dfconfig
from dfpipe.evaluation.metrics import choose_threshold, video_scores, video_weights
from dfpipe.evaluation.predict import predict
from dfpipe.models.checkpoint import set_rng_state
from dfpipe.models.experiments import build_detector, detector_spec, training_settings
from dfpipe.models.train import train, train_job, validation_metrics


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

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        bce = nn.functional.binary_cross_entropy_with_logits(logits.float(), labels)
        return {"loss": bce + 1e-3 * self.head[1].weight.square().sum(), "bce": bce}


def video_auc(scores) -> float:
    """Frame-level AUC with every video weighing 1, as the trainer and the tables compute it."""
    return roc_auc_score(scores["label"], scores["score"], sample_weight=video_weights(scores["video_key"].to_numpy()))


def fresh() -> TinyDetector:
    torch.manual_seed(0)
    return TinyDetector()


SETTINGS = {
    "epochs": 2,
    "batch_size": 4,
    "lr": 0.05,
    "seed": 7,
    "checkpoint_every": 2,
    "num_workers": 0,
    "max_steps_per_epoch": 3,
    "augment": {"hflip": 0.5, "jpeg": 0.5},
}


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> tuple[list[Path], list[Path]]:
    root = tmp_path_factory.mktemp("shards")
    # dark real faces, bright fake ones (see test_loader.sample_image): an easy task
    return (
        make_shards(root, "train", videos(3, 3)),
        make_shards(root, "val", videos(2, 2, offset=100), frames=2, n_shards=1, first=100),
    )


@pytest.fixture(scope="module")
def reference(shards, tmp_path_factory) -> Path:
    """An uninterrupted run."""
    out = tmp_path_factory.mktemp("reference")
    train(fresh(), *shards, out, SETTINGS, device="cpu")
    return out


class Killed(Exception):
    pass


def kill_after(step: int):
    def hook(record: dict) -> None:
        if record["step"] == step:
            raise Killed

    return hook


def test_loss_decreases_on_an_easy_task(shards, tmp_path) -> None:
    train(
        fresh(),
        *shards,
        tmp_path,
        {**SETTINGS, "epochs": 5, "max_steps_per_epoch": None},
        device="cpu",
    )
    losses = [json.loads(ln)["loss"] for ln in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert len(losses) == 5 * 4  # 2 × 9 samples / 4 per batch = 4 steps per epoch
    assert sum(losses[-4:]) / 4 < 0.5 * sum(losses[:4]) / 4
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["best_val_auc"] == 1.0


def test_checkpoint_holds_everything_to_resume(reference) -> None:
    ckpt = torch.load(reference / "last.pt", weights_only=False)
    assert {
        "model",
        "optimizer",
        "scheduler",
        "scaler",
        "rng",
        "epoch",
        "position",
        "step",
        "best_val_auc",
        "best_epoch",
        "val_auc",
        "settings",
        "detector",
    } <= set(ckpt)
    assert set(ckpt["rng"]) == {"python", "numpy", "torch", "cuda"}
    assert (ckpt["epoch"], ckpt["position"], ckpt["step"]) == (2, 0, 6)
    assert ckpt["optimizer"]["state"] and ckpt["scheduler"]["last_epoch"] == 6
    assert ckpt["detector"] == "tiny" and ckpt["settings"]["lr"] == 0.05


@pytest.mark.parametrize("kill_at", [3, 5])
def test_killed_run_resumes_to_the_same_weights(shards, reference, tmp_path, kill_at) -> None:
    # checkpoints at steps 2 and 4 and at each epoch end (step 3, 6): step 3 dies before its epoch-end
    # checkpoint and validation, step 5 in the middle of the second epoch
    with pytest.raises(Killed):
        train(fresh(), *shards, tmp_path, SETTINGS, device="cpu", on_step=kill_after(kill_at))
    assert torch.load(tmp_path / "last.pt", weights_only=False)["step"] == kill_at - 1
    with dfpipe_lines() as messages:
        train(fresh(), *shards, tmp_path, SETTINGS, device="cpu")
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
    assert video_auc(scores) == pytest.approx(best["val_auc"])


@pytest.fixture(scope="module")
def uneven(shards, tmp_path_factory) -> tuple[Path, list[Path]]:
    """A run whose validation AUC differs between epochs and peaks before the last: validation shards of
    textured noise (nothing to learn there), so each epoch's weights rank them differently."""
    root = tmp_path_factory.mktemp("uneven")
    val = make_shards(root / "shards", "val", videos(3, 3, offset=100), frames=4, n_shards=1, first=100, noise=True)
    out = root / "model"
    train(fresh(), shards[0], val, out, {**SETTINGS, "epochs": 3, "lr": 0.2}, device="cpu")
    return out, val


def test_best_epoch_is_chosen_by_validation_auc(uneven) -> None:
    """Regression guard: keeping the last, the first or the worst epoch instead of the best one fails here."""
    out, val = uneven
    summary = json.loads((out / "summary.json").read_text())
    aucs = summary["val_auc"]
    best = aucs.index(max(aucs)) + 1
    assert len(set(aucs)) > 1 and aucs.count(max(aucs)) == 1 and 1 < best < len(aucs)  # the case discriminates
    assert summary["best_epoch"] == best and summary["best_val_auc"] == max(aucs)
    ckpt = torch.load(out / "best.pt", weights_only=True)
    assert ckpt["epoch"] == best
    model = TinyDetector()
    model.load_state_dict(ckpt["model"])
    scores = predict(model, val, device="cpu", batch_size=5)
    assert video_auc(scores) == pytest.approx(max(aucs))


def test_validation_scores_the_validation_shards(shards, uneven) -> None:
    """Regression guard: validating on the training shards (AUC near 1 here) instead of the validation ones fails."""
    out, val = uneven
    model = TinyDetector()
    model.load_state_dict(weights_of(out / "last.pt"))
    on_val, on_train = (predict(model, s, device="cpu", batch_size=5) for s in (val, shards[0]))
    last_auc = json.loads((out / "summary.json").read_text())["val_auc"][-1]
    assert last_auc == pytest.approx(video_auc(on_val))
    assert abs(last_auc - video_auc(on_train)) > 0.3


def test_validation_auc_weighs_every_video_alike() -> None:
    """Regression guard: a frame-weighted validation AUC lets a video with many frames (NeuralTextures' doubled
    frame rate) choose the epoch. Here one fake video has 10 frames, the others 1: per frame, epoch A ranks
    better (its 10-frame video is right); per video, epoch B does (3 of its 4 real-fake pairs are right, A's 2)."""
    frames = {"original/q95/r1": 1, "original/q95/r2": 1, "Deepfakes/q95/f1_x": 10, "Deepfakes/q95/f2_y": 1}

    def table(per_video: dict[str, float]) -> pd.DataFrame:
        keys = [k for k, n in frames.items() for _ in range(n)]
        return pd.DataFrame(
            {
                "video_key": keys,
                "method": [k.split("/")[0] for k in keys],
                "video_id": [k.split("/")[-1] for k in keys],
                "label": [int(k.startswith("Deepfakes")) for k in keys],
                "score": [per_video[k] for k in keys],
            }
        )

    reals = {"original/q95/r1": 0.4, "original/q95/r2": 0.5}
    epoch_a = table({**reals, "Deepfakes/q95/f1_x": 0.9, "Deepfakes/q95/f2_y": 0.1})
    epoch_b = table({**reals, "Deepfakes/q95/f1_x": 0.45, "Deepfakes/q95/f2_y": 0.9})
    assert roc_auc_score(epoch_a["label"], epoch_a["score"]) > roc_auc_score(epoch_b["label"], epoch_b["score"])
    (auc_a, threshold_a), (auc_b, _) = validation_metrics(epoch_a), validation_metrics(epoch_b)
    assert auc_a == pytest.approx(0.5) and auc_b == pytest.approx(0.75)
    # the threshold is chosen on video means, one row (weight 1) per video, as the tables choose it
    videos = video_scores(epoch_a)
    assert threshold_a == choose_threshold(videos["label"].to_numpy(), videos["score"].to_numpy())


def test_summary_times_the_start_up(reference) -> None:
    """Start-up is reported apart from steady state: shards indexed, first batch, first step (seconds)."""
    startup = json.loads((reference / "summary.json").read_text())["startup_s"]
    assert 0 < startup["index"] <= startup["first_batch"] <= startup["first_step"]


def test_step_log_has_every_step(reference) -> None:
    lines = [json.loads(ln) for ln in (reference / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == list(range(1, 7)) and [r["epoch"] for r in lines] == [1] * 3 + [2] * 3
    assert all(set(r) == {"step", "epoch", "loss", "lr", "images_per_s"} for r in lines)
    assert lines[0]["lr"] == 0.05 and lines[-1]["lr"] < lines[0]["lr"]  # cosine decay, stepped per iteration
    assert all(r["images_per_s"] > 0 and r["loss"] > 0 for r in lines)


def test_rerun_of_a_finished_run_changes_nothing(shards, reference) -> None:
    before = (reference / "best.pt").stat().st_mtime_ns
    assert train(fresh(), *shards, reference, SETTINGS, device="cpu") == reference / "best.pt"
    assert (reference / "best.pt").stat().st_mtime_ns == before


def weights_of(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["model"]


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_point_of_other_settings_starts_afresh(shards, reference, tmp_path) -> None:
    """A finished last.pt of other settings neither blocks nor leaks into a run: it starts afresh and says so."""
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    settings = {**SETTINGS, "lr": 0.1}
    with dfpipe_lines() as messages:
        train(fresh(), *shards, out, settings, device="cpu")
    assert "last.pt: trained on other settings than this run: starting afresh" in messages[0]
    train(fresh(), *shards, tmp_path / "clean", settings, device="cpu")
    assert same_weights(weights_of(out / "last.pt"), weights_of(tmp_path / "clean" / "last.pt"))
    assert same_weights(weights_of(out / "best.pt"), weights_of(tmp_path / "clean" / "best.pt"))
    assert len((out / "train_log.jsonl").read_text().splitlines()) == 6


def test_finished_run_on_rebuilt_shards_retrains(shards, reference, tmp_path) -> None:
    """Shards rebuilt with other crops (an upstream change): the finished run is not "resumed" past its last
    epoch; the job trains on the new shards and writes their best.pt."""
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    (out / "best.pt").unlink()  # as Snakemake does before it reruns a job
    root = tmp_path / "rebuilt"  # same shard names, other crops (one frame fewer per video)
    rebuilt = (
        make_shards(root, "train", videos(3, 3), frames=2),
        make_shards(root, "val", videos(2, 2, offset=100), frames=2, n_shards=1, first=100),
    )
    with dfpipe_lines() as messages:
        assert train(fresh(), *rebuilt, out, SETTINGS, device="cpu").is_file()
    assert "trained on other shards than this run: starting afresh" in messages[0]
    train(fresh(), *rebuilt, tmp_path / "clean", SETTINGS, device="cpu")
    assert same_weights(weights_of(out / "best.pt"), weights_of(tmp_path / "clean" / "best.pt"))
    assert json.loads((out / "summary.json").read_text())["steps"] == 2 * 3


def test_finished_run_writes_a_missing_best_checkpoint(shards, reference, tmp_path) -> None:
    """Shards rewritten byte for byte (e.g. --forcerun): nothing to retrain, but best.pt, which Snakemake
    removed before the rerun, comes back from the finished last.pt without a single step."""
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    (out / "best.pt").unlink()
    log_before = (out / "train_log.jsonl").read_text()
    steps: list[dict] = []
    with dfpipe_lines() as messages:
        train(fresh(), *shards, out, SETTINGS, device="cpu", on_step=steps.append)
    assert steps == [] and (out / "train_log.jsonl").read_text() == log_before
    assert "resuming at epoch 3" in messages[0] and "best.pt: written from the finished run" in messages[1]
    ours, theirs = (torch.load(d / "best.pt", weights_only=True) for d in (out, reference))
    assert same_weights(ours["model"], theirs["model"])
    assert (ours["epoch"], ours["val_auc"]) == (theirs["epoch"], theirs["val_auc"])


def test_detector_spec_is_part_of_the_resume_point(shards, tmp_path) -> None:
    """A killed run resumes only under the same detector spec; another spec starts afresh."""
    with pytest.raises(Killed):
        train(
            fresh(),
            *shards,
            tmp_path,
            SETTINGS,
            device="cpu",
            on_step=kill_after(3),
            spec={"name": "tiny", "dropout": 0.2},
        )
    with dfpipe_lines() as messages:
        train(fresh(), *shards, tmp_path, SETTINGS, device="cpu", spec={"name": "tiny", "dropout": 0.3})
    assert "trained on another detector spec than this run: starting afresh" in messages[0]


def test_checkpoints_hold_only_tensors_and_plain_values(reference) -> None:
    """Both checkpoints load with weights_only=True, RNG states included, and restore the RNGs exactly."""
    for name in ("last.pt", "best.pt"):
        torch.load(reference / name, weights_only=True)
    state = torch.load(reference / "last.pt", weights_only=True)["rng"]
    set_rng_state(state)
    drawn = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == drawn


def test_every_torch_load_is_weights_only() -> None:
    """No checkpoint or weights file is loaded in a way that could run code (src/ and scripts/)."""
    root = Path(__file__).resolve().parents[1]
    calls = [
        (path, line)
        for folder in ("src", "scripts")
        for path in (root / folder).rglob("*.py")
        for line in path.read_text().splitlines()
        if "torch.load(" in line
    ]
    assert calls, "expected torch.load calls to check"
    assert all("weights_only=True" in line for _, line in calls), calls


def test_config_settings_reach_the_trainer(shards, tmp_path) -> None:
    """optimizer, scheduler, amp, channels_last and deterministic go from config (validated by the schema)
    through experiments.training_settings to the optimizer and schedule the trainer runs."""
    config = dfconfig.validate(
        {
            "train": {
                "optimizer": "sgd",
                "momentum": 0.8,
                "scheduler": "step",
                "step_epochs": 1,
                "step_gamma": 0.5,
                "amp": False,
                "channels_last": False,
                "deterministic": True,
                "lr": 0.02,
                "epochs": 2,
                "max_steps_per_epoch": 2,
                "batch_size": 4,
            }
        }
    )
    spec = {"name": "meso4", "model": "meso4", "pretrained": "none", "input_size": 32}
    settings = {**training_settings(config, spec), "num_workers": 0}
    job = {
        "spec": spec,
        "settings": settings,
        "methods": "all",
        "device": "cpu",
        "out_dir": str(tmp_path),
        "train": [str(p) for p in shards[0]],
        "val": [str(p) for p in shards[1]],
    }
    train_job(job)
    ckpt = torch.load(tmp_path / "last.pt", weights_only=True)
    group = ckpt["optimizer"]["param_groups"][0]
    assert group["momentum"] == 0.8 and "betas" not in group  # SGD, not Adam
    assert [json.loads(ln)["lr"] for ln in (tmp_path / "train_log.jsonl").read_text().splitlines()] == [
        0.02,
        0.02,
        0.01,
        0.01,
    ]  # halved after one epoch
    assert {k: ckpt["settings"][k] for k in ("amp", "channels_last", "deterministic")} == {
        "amp": False,
        "channels_last": False,
        "deterministic": True,
    }


@pytest.mark.parametrize("channels_last", [True, False])
def test_channels_last_applies_on_cpu(shards, tmp_path, channels_last) -> None:
    """channels_last is a CPU setting too (oneDNN's convolutions run ~1.1-1.7x faster in that order): the
    trainer puts the weights in it when asked, and leaves them alone when not."""
    detector = fresh()
    settings = {**SETTINGS, "epochs": 1, "max_steps_per_epoch": 1, "channels_last": channels_last}
    train(detector, *shards, tmp_path, settings, device="cpu")
    assert detector.body[0].weight.is_contiguous(memory_format=torch.channels_last) is channels_last


def test_decoded_cache_on_cpu_replaces_the_workers_and_changes_no_weight(shards, tmp_path, monkeypatch) -> None:
    """On CPU, when both splits' decoded crops fit in `decoded_cache_mb`, training and validation run without
    loader workers on crops decoded once; the weights come out the same as with workers decoding every epoch."""
    import dfpipe.models.train as trainer

    used: list[int] = []
    real = trainer.make_loader
    monkeypatch.setattr(
        trainer, "make_loader", lambda stream, workers, **kw: used.append(workers) or real(stream, workers, **kw)
    )
    settings = {**SETTINGS, "num_workers": 2}
    with dfpipe_lines() as messages:
        train(fresh(), *shards, tmp_path / "cached", settings, device="cpu")
    assert used == [0] and any("loader: decoded crops kept in memory" in m for m in messages)
    with dfpipe_lines() as messages:
        train(fresh(), *shards, tmp_path / "workers", {**settings, "decoded_cache_mb": 0}, device="cpu")
    assert used == [0, 2] and any("loader: 2 workers" in m for m in messages)
    cached, workers = (torch.load(tmp_path / d / "last.pt", weights_only=True) for d in ("cached", "workers"))
    assert cached["val_auc"] == workers["val_auc"]
    for key, value in workers["model"].items():
        assert torch.equal(cached["model"][key], value), key


def test_per_detector_batch_size_and_lr_are_training_settings(shards, tmp_path) -> None:
    """A detector's own batch_size and lr override the train section and never reach the model's constructor,
    in the train path and in the predict path (which builds the detector from the same spec)."""
    config = dfconfig.validate(
        {
            "detectors": [{"name": "m", "model": "meso4", "input_size": 32, "batch_size": 2, "lr": 0.03}],
            "train": {"epochs": 1, "max_steps_per_epoch": 2},
        }
    )
    spec = detector_spec(config, "m")
    settings = {**training_settings(config, spec), "num_workers": 0}
    job = {
        "spec": spec,
        "settings": settings,
        "methods": "all",
        "device": "cpu",
        "out_dir": str(tmp_path),
        "train": [str(p) for p in shards[0]],
        "val": [str(p) for p in shards[1]],
    }
    best = train_job(job)
    assert json.loads((tmp_path / "summary.json").read_text())["settings"]["batch_size"] == 2
    assert json.loads((tmp_path / "train_log.jsonl").read_text().splitlines()[0])["lr"] == 0.03
    detector = build_detector({**spec, "pretrained": str(best)})  # as scripts/predict.py builds it
    assert same_weights(detector.state_dict(), weights_of(best))
    assert len(predict(detector, shards[1], device="cpu")) == 8


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
    job = {
        "spec": {"name": "meso4", "model": "meso4", "pretrained": "none", "input_size": 64},
        "settings": {**SETTINGS, "epochs": 1},
        "methods": "all",
        "device": "cpu",
        "train": [str(p) for p in shards[0]],
        "val": [str(p) for p in shards[1]],
    }
    weights = []
    for run in range(2):
        torch.manual_seed(run)
        best = train_job({**job, "out_dir": str(tmp_path / f"run{run}")})
        weights.append(torch.load(best, weights_only=False)["model"])
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_frames_per_method_thins_the_training_split_only(shards, tmp_path, monkeypatch) -> None:
    """frames_per_method (the frame-rate ablation's setting) reaches the training stream (1 of 3 frames per
    Deepfakes video) and not validation, which scores every frame."""
    import dfpipe.evaluation.predict
    import dfpipe.models.train

    made = []

    class Recording(dfpipe.models.train.ShardStream):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(dfpipe.models.train, "ShardStream", Recording)
    monkeypatch.setattr(dfpipe.evaluation.predict, "ShardStream", Recording)
    settings = {**SETTINGS, "epochs": 1, "max_steps_per_epoch": 1, "frames_per_method": {"Deepfakes": 1}}
    train(fresh(), *shards, tmp_path, settings, device="cpu")
    fakes = {s.train: sum(e.key.startswith("Deepfakes") for e in s.entries) for s in made}
    assert fakes == {True: 3, False: 4}  # 3 videos × 1 frame; val: 2 videos × 2 frames
    assert json.loads((tmp_path / "summary.json").read_text())["settings"]["frames_per_method"] == {"Deepfakes": 1}
