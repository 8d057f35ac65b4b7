"""Faults in image-folder datasets (dfpipe.evaluation.test_sources.images) as the scan meets them: damaged or too small files,
bad split files, generator folders that collide, a missing or empty class, one image in both classes, a split
without images. Each case names the file and the fix, keeps the other images, and a rerun after the repair lists
everything."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from logcapture import dfpipe_lines
from PIL import Image
from skimage import data

from dfpipe.evaluation import test_sources
from dfpipe.evaluation.test_sources import images, shards

PHOTO = data.astronaut()[100:164, 150:214]


def _save(root, rel, shift=0, fmt=None):
    """PHOTO shifted by `shift` pixels (so each file has its own bytes) saved at root/rel."""
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.roll(PHOTO, shift, axis=1)).save(root / rel, format=fmt)


def _tree(root):
    # every name is in the train split (images.split_of), and every file has its own pixels
    for shift, rel in enumerate(("real/a.jpg", "real/sub/b.png", "fake/gan/a.jpg", "fake/gan/deep/c.png")):
        _save(root, rel, shift)
    return root


def test_corrupt_image_is_reported_and_skipped(tmp_path):
    """A JPEG cut in half in an image-folder dataset: reported by name and skipped, every other image listed; replaced, it is listed."""
    root = _tree(tmp_path / "ds")
    whole = (root / "fake/gan/a.jpg").read_bytes()
    (root / "fake/gan/a.jpg").write_bytes(whole[: len(whole) // 2])
    with dfpipe_lines() as logged:
        result = images.scan(root)
    assert [p for p, _ in result.skipped] == ["fake/gan/a.jpg"]
    assert sorted(result.table["path"]) == ["fake/gan/deep/c.png", "real/a.jpg", "real/sub/b.png"]
    assert any(
        "skipped fake/gan/a.jpg: not a readable image" in m and "replace or delete the file" in m for m in logged
    )
    images.write_scan(result, tmp_path / "images.parquet", tmp_path / "report.json")
    assert json.loads((tmp_path / "report.json").read_text())["skipped"][0]["path"] == "fake/gan/a.jpg"
    (root / "fake/gan/a.jpg").write_bytes(whole)
    again = images.scan(root)
    assert not again.skipped and len(again.table) == 4
    # the repair moves no other image between splits
    before = result.table.set_index("path")["split"]
    assert again.table.set_index("path")["split"].loc[before.index].equals(before)


def test_split_file_with_an_image_twice(tmp_path):
    """A split file listing one image in two splits: refused naming the file and the image; the fixed file scans."""
    root = _tree(tmp_path / "ds")
    split_file = tmp_path / "my_splits.json"
    split_file.write_text(json.dumps({"train": ["a.jpg", "sub/b.png"], "test": ["a.jpg"]}))
    with pytest.raises(ValueError, match=r"my_splits\.json: 'a\.jpg' is listed in both train and test; keep it in one"):
        images.scan(root, split_file=split_file)
    split_file.write_text("{not json")
    with pytest.raises(ValueError, match=r"my_splits\.json: not a readable split file"):
        images.scan(root, split_file=split_file)
    split_file.write_text(json.dumps({"train": ["a.jpg", "sub/b.png"], "test": ["deep/c.png"]}))
    table = images.scan(root, split_file=split_file).table.set_index("path")
    assert table.loc["fake/gan/a.jpg", "split"] == "train" and table.loc["fake/gan/deep/c.png", "split"] == "test"


def test_generator_folders_that_collide(tmp_path):
    """Two generator folders that become one method name (gan-a, gan_a) or one named "original": refused naming the folder."""
    root = _tree(tmp_path / "ds")
    for shift, name in enumerate(("gan-a", "gan_a"), start=10):
        _save(root, f"fake/{name}/x.png", shift)
    with pytest.raises(
        ValueError, match=r"fake/gan_a: generator name 'gan_a' becomes method 'gan_a'.*rename the folder"
    ):
        images.scan(root)
    shutil.rmtree(root / "fake" / "gan_a")
    assert set(images.scan(root).table["method"]) == {"original", "gan", "gan_a"}
    _save(root, "fake/original/y.png", 20)
    with pytest.raises(ValueError, match="names the real images; rename the folder"):
        images.scan(root)


def test_missing_or_empty_class_folder(tmp_path):
    """Image-folder dataset without fake/, or with an empty real/: refused naming the folder; with both classes it scans."""
    root = _tree(tmp_path / "ds")
    shutil.rmtree(root / "fake")
    with pytest.raises(FileNotFoundError, match=r"ds: no fake/<generator>/ folder.*fake/<generator>/"):
        images.scan(root)
    _tree(root)
    for rel in ("real/a.jpg", "real/sub/b.png"):
        (root / rel).unlink()
    (root / "real" / "notes.txt").write_text("no image here")
    with pytest.raises(
        ValueError, match=r"ds/real: no usable image; an image-folder dataset needs real images: put them under real/"
    ):
        images.scan(root)
    _tree(root)
    assert sorted(images.scan(root).table["label"]) == [0, 0, 1, 1]


def test_too_small_image_is_skipped_by_name(tmp_path, cjpeg):
    """A 1×1 and a 64×20 image in an image-folder dataset: skipped by name with their size, and MozJPEG encodes the rest."""
    root = _tree(tmp_path / "ds")
    for rel in ("real/z.png", "fake/gan/z.png"):  # the test split's images
        _save(root, rel, 30 + len(rel))
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(root / "real" / "dot.png")
    Image.fromarray(PHOTO[:20]).save(root / "fake" / "gan" / "strip.png")
    with dfpipe_lines() as logged:
        scan = test_sources.scan_source({"name": "folder", "kind": "images", "root": str(root)}, tmp_path / "out")
    reasons = dict(scan.skipped)
    assert sorted(reasons) == ["fake/gan/strip.png", "real/dot.png"]
    assert reasons["real/dot.png"] == f"too small: 1×1 px, an image needs at least {images.MIN_SIDE} px a side"
    assert "64×20 px" in reasons["fake/gan/strip.png"]
    assert any("skipped real/dot.png: too small: 1×1 px" in m for m in logged)
    images.write_scan(scan, tmp_path / "images.parquet", tmp_path / "scan.json")
    assert {r["path"] for r in json.loads((tmp_path / "scan.json").read_text())["skipped"]} == set(reasons)
    index = shards.write_source_shards(scan.table, root, 80, [], cjpeg, tmp_path / "q80")
    assert index["samples"] == 6
    Image.fromarray(np.roll(PHOTO, 40, axis=0)).save(root / "real" / "dot.png")  # replaced by a whole image
    assert [p for p, _ in images.scan(root).skipped] == ["fake/gan/strip.png"]


def test_same_image_in_real_and_fake(tmp_path):
    """One image's bytes under real/ and fake/ (a label error), or in two splits of one class: every copy left out by name."""
    root = _tree(tmp_path / "ds")
    _save(root, "real/keep.png", 50)
    (root / "fake" / "gan" / "copied.jpg").write_bytes((root / "real" / "a.jpg").read_bytes())
    assert images.split_of("sub/b.png") != images.split_of("z.png")
    (root / "real" / "z.png").write_bytes((root / "real" / "sub" / "b.png").read_bytes())
    with dfpipe_lines() as logged:
        scan = images.scan(root)
    reasons = dict(scan.skipped)
    assert sorted(reasons) == ["fake/gan/copied.jpg", "real/a.jpg", "real/sub/b.png", "real/z.png"]
    assert (
        "same bytes as fake/gan/copied.jpg" in reasons["real/a.jpg"] and "both real and fake" in reasons["real/a.jpg"]
    )
    assert "same bytes as real/a.jpg" in reasons["fake/gan/copied.jpg"]
    assert "same bytes as real/z.png (test)" in reasons["real/sub/b.png"] and "two splits" in reasons["real/sub/b.png"]
    assert sorted(scan.table["path"]) == ["fake/gan/a.jpg", "fake/gan/deep/c.png", "real/keep.png"]
    assert any("skipped real/a.jpg: same bytes as fake/gan/copied.jpg" in m for m in logged)
    (root / "fake" / "gan" / "copied.jpg").unlink()
    (root / "real" / "z.png").unlink()
    again = images.scan(root)
    assert not again.skipped and len(again.table) == 5


def test_test_source_split_without_images(tmp_path):
    """Image-folder test source whose test split gets no image (every name hashes to train): refused naming the split."""
    root = _tree(tmp_path / "ds")
    entry = {"name": "folder", "kind": "images", "root": str(root)}
    with pytest.raises(ValueError, match=r"evaluate.test_sources\[folder\]: its test split holds 0 real and 0 fake"):
        test_sources.scan_source(entry, tmp_path / "out")
    _save(root, "real/z.png", 30)
    with pytest.raises(ValueError, match=r"holds 1 real and 0 fake images.*add fake images"):
        test_sources.scan_source(entry, tmp_path / "out")
    _save(root, "fake/gan/z.png", 31)
    table = test_sources.scan_source(entry, tmp_path / "out").table
    assert sorted(table.loc[table["split"] == "test", "label"]) == [0, 1]
