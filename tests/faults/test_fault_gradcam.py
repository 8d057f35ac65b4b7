"""Fault cases of the Grad-CAM job (gradcam.model_grids, the rule `gradcam`), on a real model file and real
tiny test shards."""

from __future__ import annotations

import pytest
import torch
from test_gradcam import predictions_file
from test_loader import make_shards, videos

from dfpipe.apps.predict import load_model, write_model_file
from dfpipe.evaluation.gradcam import model_grids
from dfpipe.models.experiments import build_detector

SPEC = {"name": "meso_ela", "model": "meso4", "input_size": 16, "ela": True}


@pytest.fixture
def run(tmp_path):
    torch.manual_seed(0)
    best = write_model_file(
        tmp_path / "data" / "models" / "meso_ela" / "q77-all" / "best.pt", build_detector(SPEC), spec=SPEC
    )
    test = {
        q: make_shards(tmp_path / "data" / "shards", "test", videos(2, 2), frames=2, n_shards=1, quality=q)
        for q in (77, 10)
    }
    outs = {q: tmp_path / "results" / "gradcam" / "meso_ela" / "q77-all" / f"q{q}.png" for q in test}
    model = load_model(best)
    model.detector.ela = model.ela
    return best, test, predictions_file(model.detector, test, tmp_path / "predictions.parquet"), outs


def test_truncated_model_file(run) -> None:
    """Model file cut short: the Grad-CAM job names best.pt and says to copy it again or retrain; no grid written."""
    best, test, pred, outs = run
    intact = best.read_bytes()
    best.write_bytes(intact[: len(intact) // 2])
    with pytest.raises(ValueError, match=rf"{best.name}.*use an intact model file \(copy best\.pt again .*retrain"):
        model_grids(best, test, pred, outs, 77, k=1, device="cpu")
    assert not any(p.exists() for p in outs.values()) and not list(outs[77].parent.glob("*.part"))
    best.write_bytes(intact)  # the fault removed: the rerun writes every grid
    assert model_grids(best, test, pred, outs, 77, k=1, device="cpu") == [outs[77], outs[10]]


def test_test_shard_cut_short(run) -> None:
    """Test shard truncated: the Grad-CAM job names the shard and its rebuild; the grid of the other quality stays."""
    best, test, pred, outs = run
    model_grids(best, test, pred, outs, 77, k=1, device="cpu")
    before = outs[77].read_bytes()
    shard = test[10][0]
    intact = shard.read_bytes()
    shard.write_bytes(intact[: len(intact) // 3])
    with pytest.raises(ValueError, match=rf"{shard.name}: .*rerun snakemake \(or `snakemake --forcerun shards_test`\)"):
        model_grids(best, test, pred, outs, 77, k=1, device="cpu")
    assert outs[77].read_bytes() == before
    shard.write_bytes(intact)
    assert model_grids(best, test, pred, outs, 77, k=1, device="cpu") == [outs[77], outs[10]]
