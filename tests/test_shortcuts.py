"""Shortcut baselines: a set whose classes differ by a trivial cue is flagged, a set without one is not; the cues
are measured on the shards' JPEGs and joined with each image's native size."""

from __future__ import annotations

import io
import json
import tarfile

import cv2
import numpy as np
import pandas as pd
import pytest

from dfpipe.evaluation import crossdataset, shortcuts


def _shard(path, images, labels, quality=95):
    """A shard in the main format: per sample .jpg, .cls and .json (each image its own video)."""
    with tarfile.open(path, "w") as tar:
        for i, (rgb, label) in enumerate(zip(images, labels)):
            key = f"{'fake' if label else 'original'}-{i:03d}_x-00000"
            meta = {
                "label": int(label),
                "method": "fake" if label else "original",
                "video_id": f"{i:03d}_x",
                "video_key": f"m/q{quality}/{i:03d}_x",
                "quality": quality,
                "frame_index": 0,
            }
            jpg = cv2.imencode(".jpg", rgb, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()
            for ext, data in (("jpg", jpg), ("cls", str(label).encode()), ("json", json.dumps(meta).encode())):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def _textures(n, seed, blur=0.0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        img = cv2.resize(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8), (64, 64), interpolation=cv2.INTER_CUBIC)
        img = np.clip(img.astype(float) + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)
        out.append(cv2.GaussianBlur(img, (0, 0), blur) if blur else img)
    return out


@pytest.fixture
def sets(tmp_path):
    labels = [0] * 20 + [1] * 20
    blurred = _shard(tmp_path / "blurred.tar", _textures(20, 0) + _textures(20, 1, blur=1.5), labels)
    alike = _shard(tmp_path / "alike.tar", _textures(20, 2) + _textures(20, 3), labels)
    return {"blurred": shortcuts.shard_samples([blurred]), "alike": shortcuts.shard_samples([alike])}


def test_a_set_with_a_known_shortcut_is_flagged_and_one_without_is_not(sets):
    table = shortcuts.shortcut_table(sets, n_boot=50)
    flags = shortcuts.flags(table).set_index("dataset")
    assert flags.loc["blurred", "shortcut"] and not flags.loc["alike", "shortcut"]
    sharp = table[(table["dataset"] == "blurred") & (table["cue"] == "laplacian_var")].iloc[0]
    assert sharp["auc"] < 0.2 and sharp["flagged"] and sharp["auc_lo"] <= sharp["auc"] <= sharp["auc_hi"]
    assert table.loc[table["dataset"] == "alike", "auc"].between(0.2, 0.8).all()
    assert set(table["cue"]) == {"laplacian_var", "hf_share", "bpp"}  # no size or prior quality carried here
    md = shortcuts.to_markdown(table)
    assert "| blurred | q95 |" in md and "**" in md.split("| blurred |")[1].split("\n")[0]


def test_native_size_from_the_source_table_is_a_cue(sets):
    """A test source's original image sizes join its samples by video_id: fakes twice the size → AUC 1."""
    samples = sets["alike"]
    scan = pd.DataFrame(
        {
            "video_id": samples["video_id"],
            "width": 100 + 100 * samples["label"],
            "height": 100,
            "encoding": "png",
            "quality_estimate": np.nan,
        }
    )
    joined = shortcuts.with_sources(samples, shortcuts.source_image_cues(scan), ["video_id"])
    rows = pd.DataFrame(shortcuts.cue_rows(joined, "sized", n_boot=20)).set_index("cue")
    assert rows.loc["native_size", "auc"] == 1.0 and rows.loc["native_size", "flagged"]
    assert "prior_quality" not in rows.index  # every image lossless: one value, no cue


def test_matrix_rows_carry_their_test_sets_flag(sets):
    table = shortcuts.shortcut_table(sets, n_boot=20)
    matrix = pd.DataFrame(
        {"train_dataset": "demo", "test_dataset": ["blurred", "alike", "other"], "test_quality": 95, "auc": 0.7}
    )
    marked = crossdataset.mark_shortcuts(matrix, table).set_index("test_dataset")
    assert marked.loc["blurred", "shortcut"] and marked.loc["blurred", "shortcut_auc"] <= 0.2
    assert not marked.loc["alike", "shortcut"] and not marked.loc["other", "shortcut"]
