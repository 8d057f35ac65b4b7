"""Faults in image-folder datasets (dfpipe.sources.images) as the scan meets them: damaged files, bad split
files, generator folders that collide. Each case names the file and the fix, keeps the other images, and a
rerun after the repair lists everything."""

from __future__ import annotations

import json
import shutil

import pytest
from logcapture import dfpipe_lines
from PIL import Image
from skimage import data

from dfpipe.sources import images

PHOTO = data.astronaut()[100:164, 150:214]


def _tree(root):
    for rel, fmt in (
        ("real/a.jpg", "JPEG"),
        ("real/sub/b.png", "PNG"),
        ("fake/gan/a.jpg", "JPEG"),
        ("fake/gan/deep/c.png", "PNG"),
    ):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(PHOTO).save(root / rel, format=fmt)
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
    for name in ("gan-a", "gan_a"):
        (root / "fake" / name).mkdir(parents=True)
        Image.fromarray(PHOTO).save(root / "fake" / name / "x.png")
    with pytest.raises(
        ValueError, match=r"fake/gan_a: generator name 'gan_a' becomes method 'gan_a'.*rename the folder"
    ):
        images.scan(root)
    shutil.rmtree(root / "fake" / "gan_a")
    assert set(images.scan(root).table["method"]) == {"original", "gan", "gan_a"}
    (root / "fake" / "original").mkdir()
    Image.fromarray(PHOTO).save(root / "fake" / "original" / "y.png")
    with pytest.raises(ValueError, match="names the real images; rename the folder"):
        images.scan(root)
