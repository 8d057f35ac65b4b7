"""Faults in training and model loading: planted pickle payloads and resume points of another run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from logcapture import dfpipe_lines
from test_loader import make_shards, videos
from test_train import SETTINGS, fresh, same_weights, weights_of

from dfpipe.models.experiments import build_detector
from dfpipe.models.train import train, train_job


class Payload:
    """Unpickling this creates `marker`: what a malicious checkpoint could do with any code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def plant(path: Path, marker: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": {"w": torch.zeros(1)}, "settings": Payload(marker)}, path)
    # the payload is live: loading it the unsafe way does run it (on another marker)
    control = marker.with_name("control")
    torch.save({"x": Payload(control)}, path.with_name("control.pt"))
    torch.load(path.with_name("control.pt"), weights_only=False)
    assert control.exists()
    control.unlink()
    path.with_name("control.pt").unlink()


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> tuple[list[Path], list[Path]]:
    root = tmp_path_factory.mktemp("shards")
    return (
        make_shards(root, "train", videos(3, 3)),
        make_shards(root, "val", videos(2, 2, offset=100), frames=2, n_shards=1, first=100),
    )


def test_pickle_payload_as_last_pt(shards, tmp_path) -> None:
    """Pickle payload planted as last.pt: refused naming the file, its code never runs; deleting it trains afresh."""
    out, marker = tmp_path / "model", tmp_path / "pwned"
    plant(out / "last.pt", marker)
    with pytest.raises(
        ValueError,
        match=r"model/last.pt: refused: not a plain checkpoint \(loading it would import "
        r"and run .*open\); delete it",
    ):
        train(fresh(), *shards, out, SETTINGS, device="cpu")
    assert not marker.exists()
    assert not (out / "best.pt").exists()
    (out / "last.pt").unlink()
    train(fresh(), *shards, out, SETTINGS, device="cpu")
    train(fresh(), *shards, tmp_path / "clean", SETTINGS, device="cpu")
    assert same_weights(weights_of(out / "best.pt"), weights_of(tmp_path / "clean" / "best.pt"))


def test_pickle_payload_as_pretrained_weights(tmp_path) -> None:
    """Pickle payload given as `pretrained:`: refused naming the file and the key, its code never runs."""
    path, marker = tmp_path / "weights.pth", tmp_path / "pwned"
    plant(path, marker)
    with pytest.raises(
        ValueError,
        match=r"pretrained weights .*weights.pth: refused: not a plain weights file "
        r"\(loading it would import and run .*open\); set `pretrained:",
    ):
        build_detector({"name": "m", "model": "meso4", "pretrained": str(path), "input_size": 64})
    assert not marker.exists()


def test_pickle_payload_as_best_pt_in_predict(tmp_path) -> None:
    """Pickle payload planted as a model's best.pt: the predict path refuses it naming the file, no code runs."""
    path, marker = tmp_path / "models" / "meso4" / "q95-all" / "best.pt", tmp_path / "pwned"
    plant(path, marker)
    spec = {"name": "meso4", "model": "meso4", "pretrained": "none", "input_size": 64, "batch_size": 8}
    with pytest.raises(ValueError, match=r"q95-all/best.pt: refused"):
        build_detector({**spec, "pretrained": str(path)})  # what scripts/predict.py does
    assert not marker.exists()


def test_truncated_last_pt(shards, tmp_path) -> None:
    """Truncated last.pt: named as unreadable with the fix (delete it); the rerun after deleting it completes."""
    out = tmp_path / "model"
    train(fresh(), *shards, out, {**SETTINGS, "epochs": 1}, device="cpu")
    data = (out / "last.pt").read_bytes()
    (out / "last.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"model/last.pt: not a readable checkpoint .*delete it to train afresh"):
        train(fresh(), *shards, out, {**SETTINGS, "epochs": 1}, device="cpu")
    (out / "last.pt").unlink()
    assert train(fresh(), *shards, out, {**SETTINGS, "epochs": 1}, device="cpu").is_file()


def test_finished_model_then_upstream_change(shards, tmp_path) -> None:
    """Shards rebuilt after a finished training: the job retrains and writes best.pt (no resume past the end).

    As Snakemake does it: best.pt removed before the rerun, new crops under the same shard names."""
    job = {
        "spec": {"name": "meso4", "model": "meso4", "pretrained": "none", "input_size": 32},
        "settings": {**SETTINGS, "epochs": 1},
        "methods": "all",
        "device": "cpu",
        "train": [str(p) for p in shards[0]],
        "val": [str(p) for p in shards[1]],
    }
    out = tmp_path / "model"
    train_job({**job, "out_dir": str(out)})
    root = tmp_path / "rebuilt"
    new = {
        "train": [str(p) for p in make_shards(root, "train", videos(3, 3), frames=2)],
        "val": [str(p) for p in make_shards(root, "val", videos(2, 2, offset=100), frames=1, n_shards=1, first=100)],
    }
    (out / "best.pt").unlink()
    with dfpipe_lines() as messages:
        best = train_job({**job, **new, "out_dir": str(out)})
    assert best.is_file() and "other shards" in messages[0]
    clean = train_job({**job, **new, "out_dir": str(tmp_path / "clean")})
    assert same_weights(weights_of(best), weights_of(clean))
    assert json.loads((out / "summary.json").read_text())["steps"] == 3
