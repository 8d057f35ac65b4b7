"""The image-folder source on a tiny tree of real photos: nested folders, JPEG/PNG/WebP, a corrupt file, a
non-image file; stable splits; straight decode → MozJPEG."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
from logcapture import dfpipe_lines
from PIL import Image
from skimage import data

from dfpipe.data.fidelity import measure
from dfpipe.data.shards import write_split
from dfpipe.evaluation.test_sources import fidelity, images, shards

PHOTO = data.astronaut()[100:228, 150:278]  # a real 128² face crop


def _save(path, rgb, fmt, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, format=fmt, **kw)


@pytest.fixture()
def tree(tmp_path):
    root = tmp_path / "ds"
    _save(root / "real" / "a.jpg", PHOTO, "JPEG", quality=90)
    _save(root / "real" / "people" / "p1" / "b.png", PHOTO[::-1], "PNG")
    _save(root / "real" / "c.webp", PHOTO[:, ::-1], "WEBP", quality=80)
    _save(root / "fake" / "style-gan" / "1.jpg", PHOTO[:, :, ::-1], "JPEG", quality=75)
    _save(root / "fake" / "style-gan" / "x" / "y" / "2.png", 255 - PHOTO, "PNG")
    _save(root / "fake" / "ldm" / "a.jpg", PHOTO // 2, "JPEG", quality=95)
    buf = io.BytesIO()
    Image.fromarray(PHOTO).save(buf, format="JPEG", quality=80)
    (root / "fake" / "ldm" / "cut.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])  # truncated
    (root / "fake" / "ldm" / "noise.png").write_bytes(b"not a png at all")
    (root / "real" / "notes.txt").write_text("captions")
    _save(root / "fake" / "loose.png", PHOTO, "PNG")  # no generator folder
    (root / "real" / ".DS_Store").write_bytes(b"\0")
    return root


def test_scan_tiny_tree(tree):
    """Every image at any depth is listed with its class, generator, relative path and original encoding; the
    corrupt files are reported and skipped, the text file and an image outside a class folder ignored with a
    log line, hidden files passed over."""
    with dfpipe_lines() as logged:
        result = images.scan(tree)
    t = result.table.set_index("path")
    assert list(result.table.columns) == images.TABLE_COLUMNS
    assert sorted(t.index) == [
        "fake/ldm/a.jpg",
        "fake/style-gan/1.jpg",
        "fake/style-gan/x/y/2.png",
        "real/a.jpg",
        "real/c.webp",
        "real/people/p1/b.png",
    ]
    assert t.loc["real/people/p1/b.png", ["method", "label", "encoding"]].tolist() == ["original", 0, "png"]
    assert t.loc["fake/style-gan/x/y/2.png", ["method", "generator", "label"]].tolist() == ["style_gan", "style-gan", 1]
    assert t.loc["real/c.webp", "encoding"] == "webp"
    assert t.loc["real/a.jpg", "quality_estimate"] == 90
    assert t.loc["fake/style-gan/1.jpg", "quality_estimate"] == 75
    assert t.loc["fake/ldm/a.jpg", "quality_estimate"] == 95
    assert np.isnan(t.loc["real/c.webp", "quality_estimate"])
    assert (t[["width", "height"]] == 128).all().all()
    assert result.table["key"].is_unique and not result.table["key"].str.contains(r"[.\-]").any()
    assert {p for p, _ in result.skipped} == {"fake/ldm/cut.jpg", "fake/ldm/noise.png"}
    assert result.ignored == ["fake/loose.png", "real/notes.txt"]
    assert any("skipped fake/ldm/cut.jpg" in m and "replace or delete" in m for m in logged)
    assert any("ignored real/notes.txt" in m for m in logged)
    assert any("ignored fake/loose.png (outside real/ and fake/<generator>/)" in m for m in logged)
    assert not any(str(tree) in str(v) for v in result.table.to_numpy().ravel())  # nothing absolute


def test_jpeg_quality_estimate_is_exact_for_ijg_encoders():
    """PIL (libjpeg-turbo) files at any quality give back that quality; a file without tables gives NaN."""
    for q in (5, 10, 23, 50, 51, 77, 90, 99, 100):
        buf = io.BytesIO()
        Image.fromarray(PHOTO).save(buf, format="JPEG", quality=q)
        assert images.jpeg_quality(Image.open(buf).quantization) == q, q
    assert np.isnan(images.jpeg_quality({}))


def test_splits_are_stable(tree, tmp_path):
    """The same names get the same splits on every run and when files are added; a paired real/fake name
    shares its split; the fractions hold on many names."""
    first = images.scan(tree).table.set_index("path")["split"]
    for i in range(40):
        _save(tree / "fake" / "ldm" / "more" / f"{i}.png", PHOTO[i : i + 32, :32], "PNG")
    second = images.scan(tree).table.set_index("path")["split"]
    assert len(second) == len(first) + 40
    pd.testing.assert_series_equal(second.loc[first.index], first)
    assert images.split_of("0001.png") == images.split_of("0001.png")
    names = [f"img_{i}.jpg" for i in range(3000)]
    shares = pd.Series([images.split_of(n) for n in names]).value_counts(normalize=True)
    assert abs(shares["train"] - 0.7) < 0.03 and abs(shares["val"] - 0.15) < 0.03
    # in the tree: real/a.jpg and fake/ldm/a.jpg have the same name inside their class folder
    assert second["real/a.jpg"] == second["fake/ldm/a.jpg"]


def test_split_file(tree, tmp_path):
    """A given split file decides the splits (names inside a class folder or from the root); unlisted images stay
    in the table without a split; a name in two splits is refused naming the file."""
    split_file = tmp_path / "splits.json"
    split_file.write_text(json.dumps({"train": ["a.jpg", "people/p1/b.png"], "test": ["fake/style-gan/1.jpg"]}))
    t = images.scan(tree, split_file=split_file).table.set_index("path")["split"]
    assert t["real/a.jpg"] == t["fake/ldm/a.jpg"] == "train"
    assert t["real/people/p1/b.png"] == "train" and t["fake/style-gan/1.jpg"] == "test"
    assert t[["real/c.webp", "fake/style-gan/x/y/2.png"]].isna().all()
    split_file.write_text(json.dumps({"train": ["a.jpg"], "val": ["a.jpg"]}))
    with pytest.raises(ValueError, match=r"splits\.json: 'a\.jpg' is listed in both train and val"):
        images.scan(tree, split_file=split_file)


def test_not_an_image_folder_dataset(tmp_path):
    """A root without real/ or fake/ is refused with the expected layout."""
    with pytest.raises(FileNotFoundError, match="real images under real/"):
        images.scan(tmp_path)


def test_compress_decodes_once_and_encodes_alike(tree, tmp_path, cjpeg):
    """Straight from the files to MozJPEG: lossless files reach the encoder with their exact pixels, every image
    (real or fake, PNG or JPEG or WebP) gets the same encoder string, and the table packs into shards."""
    table = images.scan(tree).table
    table["split"] = "train"
    np.testing.assert_array_equal(images.read_rgb(tree, "real/people/p1/b.png"), PHOTO[::-1])
    out = images.compress_images(table, tree, 77, [], cjpeg, threads=2)
    assert len(out) == len(table) and out["encoder"].nunique() == 1 and "-quality 77" in out["encoder"].iloc[0]
    for jpg in out["jpeg"]:
        im = Image.open(io.BytesIO(jpg))
        assert im.format == "JPEG" and im.size == (128, 128)
    counts = write_split([out], 77, "train", 1, tmp_path / "shards" / "q77")
    assert counts["samples"] == len(table) and counts["by_label"] == {"0": 3, "1": 3}


def test_psnr_ssim_of_a_test_source_by_original_encoding(tree, tmp_path, cjpeg):
    """Each test-source image's MozJPEG loss is measured against its decoded file and labelled with the file's
    own encoding; the report groups by it, and fidelity falls with the MozJPEG quality."""
    table = images.scan(tree).table
    table["split"] = "test"
    measured = {}
    for q in (95, 10):
        shards.write_source_shards(table, tree, q, [], cjpeg, tmp_path / f"q{q}")
        tars = sorted((tmp_path / f"q{q}").glob("*.tar"))
        measured[q] = fidelity.measure_source(table, tree, q, tars).set_index("key")
    by_path = table.set_index("path")["key"]
    original = measured[95]["original"]
    assert original[by_path["real/a.jpg"]] == "JPEG q90" and original[by_path["fake/style-gan/1.jpg"]] == "JPEG q75"
    assert original[by_path["real/people/p1/b.png"]] == "PNG" and original[by_path["real/c.webp"]] == "WEBP"
    assert len(measured[95]) == len(table) and (measured[95]["ssim"] <= 1).all()
    assert (measured[95]["psnr"] > measured[10]["psnr"] + 5).all()
    # the PNG's figure is that of its exact pixels against MozJPEG's output
    jpeg = images.compress_images(table[table["path"] == "real/people/p1/b.png"], tree, 95, [], cjpeg)["jpeg"].iloc[0]
    psnr, _, _ = measure(images.read_rgb(tree, "real/people/p1/b.png"), jpeg)
    assert measured[95].loc[by_path["real/people/p1/b.png"], "psnr"] == pytest.approx(psnr)
    summary = fidelity.summarize_quality({"mine": pd.concat(measured.values()).reset_index()})
    assert set(summary["original"]) == {"JPEG q90", "JPEG q75", "JPEG q95", "PNG", "WEBP"}
    assert summary["n"].sum() == 2 * len(table) and (summary["dataset"] == "mine").all()
