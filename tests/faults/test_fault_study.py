"""Faults in the study's inputs: a damaged prediction file under the tables, a demo file lost after its build."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from logcapture import dfpipe_lines
from test_metrics import make_predictions

from dfpipe.config import validate
from dfpipe.data.sources import demo
from dfpipe.evaluation.metrics import metric_table, read_predictions
from dfpipe.evaluation.tables import write_results
from dfpipe.io import write_parquet
from dfpipe.provenance import collect


def tables_from(paths: list[Path], out: Path, manifest: Path) -> dict[str, bytes]:
    """What the tables rule does (scripts/tables.py), returning every result file's bytes."""
    preds = read_predictions(paths)
    metrics_df = metric_table(preds[preds.split == "test"], preds[preds.split == "val"], n_boot=20)
    written = write_results(metrics_df, out, collect(validate({}), manifest, "mozjpeg version 5.0.0", []))
    return {p.name: p.read_bytes() for p in written}


def test_truncated_prediction_file_is_named_and_tables_rebuild_after_rerun(tmp_path: Path) -> None:
    """Prediction file cut mid-write: the tables stop naming it and the fix; earlier tables stay; a rerun matches."""
    manifest = tmp_path / "manifest.parquet"
    manifest.write_bytes(b"manifest")
    paths = []
    for det in ("meso4", "effb4"):
        pred = make_predictions("test", detectors=(det,), train_qualities=(95,), test_qualities=(95,), n_videos=3)
        val = make_predictions("val", detectors=(det,), train_qualities=(95,), test_qualities=(95,), n_videos=3, seed=1)
        paths.append(tmp_path / "predictions" / f"{det}.parquet")
        write_parquet(paths[-1], pd.concat([pred, val], ignore_index=True))
    results = tmp_path / "results"
    before = tables_from(paths, results, manifest)

    good = paths[1].read_bytes()
    paths[1].write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError) as err:
        tables_from(paths, results, manifest)
    assert str(err.value).startswith(f"{paths[1]}: not a readable prediction table")
    assert "delete it and rerun" in str(err.value)
    assert {p.name: p.read_bytes() for p in results.iterdir()} == before  # nothing half-rewritten

    paths[1].write_bytes(good)  # the predict job rerun
    assert tables_from(paths, tmp_path / "rerun", manifest) == before


def test_demo_file_lost_after_build_is_rebuilt_identically(tmp_path: Path) -> None:
    """Demo video deleted after its build: the next build notices (sources.json lists it), rebuilds the same bytes."""
    settings = {"identities": 2, "seconds": 0.5, "fps": 8, "frame_size": 96, "seed": 1}
    root = tmp_path / "demo"
    demo.build(settings, root, ["FaceSwap"], "c23", gan_cache=tmp_path / "gan")
    first = {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    lost = next(p for p in root.rglob("FaceSwap/c23/videos/*.mp4"))
    lost.unlink()
    with dfpipe_lines() as messages:
        demo.build(settings, root, ["FaceSwap"], "c23", gan_cache=tmp_path / "gan")
    assert not any("up to date" in m for m in messages)
    assert {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()} == first
