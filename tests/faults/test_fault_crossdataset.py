"""Fault cases of the test sources (evaluate.test_sources): image-folder sources with a broken file or no layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dfpipe.evaluation import test_sources
from dfpipe.evaluation.test_sources import shards


def _tree(root: Path) -> None:
    rng = np.random.default_rng(0)
    for cls in ("real", "fake/gen"):
        for i in range(12):
            path = root / cls / f"{i:02d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(path)


def _shards(root: Path, out: Path, cjpeg: Path) -> dict:
    entry = {"name": "folder", "kind": "images", "root": str(root)}
    scan = test_sources.scan_source(entry, out)
    return shards.write_source_shards(scan.table, root, 80, [], cjpeg, out / "q80")


def test_corrupt_image_in_a_test_source_is_skipped_and_the_shards_still_written(tmp_path, cjpeg):
    """Corrupt image in an image-folder test source: skipped and named, the others sharded; fixed, it joins."""
    root = tmp_path / "tree"
    _tree(root)
    (root / "real" / "99.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    entry = {"name": "folder", "kind": "images", "root": str(root)}
    scan = test_sources.scan_source(entry, tmp_path)
    assert [p for p, _ in scan.skipped] == ["real/99.png"]
    index = _shards(root, tmp_path / "a", cjpeg)
    assert index["samples"] == 24 and json.loads((tmp_path / "a/q80/test.counts.json").read_text())["samples"] > 0
    # the fault removed (the file replaced by a real image), the rerun holds it too
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root / "real" / "99.png")
    assert _shards(root, tmp_path / "b", cjpeg)["samples"] == 25  # every split lands in train or test
    assert test_sources.scan_source(entry, tmp_path).skipped == []


def test_image_source_without_root_or_layout_names_the_key(tmp_path):
    """Test source of kind images without root, or with a root lacking real/ and fake/: the key and layout named."""
    with pytest.raises(ValueError, match=r"evaluate.test_sources\[folder\].*needs `root`"):
        test_sources.scan_source({"name": "folder", "kind": "images", "root": None}, tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="real/ or fake/<generator>/"):
        test_sources.scan_source({"name": "folder", "kind": "images", "root": str(tmp_path / "empty")}, tmp_path)
