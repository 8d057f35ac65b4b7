"""The ffpp_tree test source: face crops of FaceShifter / DeepFakeDetection videos of a tiny FF++-layout tree
(real carphone clips), all in the test split, read back by the image-folder scan; and the FaceShifter set in a
local tree's manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import encode_clip
from PIL import Image

from dfpipe.data import manifest
from dfpipe.data.layout import video_dir
from dfpipe.data.sources import local
from dfpipe.evaluation import crossdataset, test_sources
from dfpipe.evaluation.test_sources import images, shards

FACES = {"size": 64, "margin": 1.3, "align": True, "min_confidence": 0.5, "min_face_size": 32}
ACTOR, DFD_FAKE = "01__talking", "01_02__talking__ABCDEFGH"
NO_FACE, BROKEN = "004", "005"


@pytest.fixture(scope="module")
def tree(tmp_path_factory, carphone) -> Path:
    """Youtube originals 000 and 003 with their FaceShifter fake 000_003, an original without a face (flat grey)
    and one that is no video; one DFD actor original and its fake; FF++ splits with 000+003 in test."""
    root = tmp_path_factory.mktemp("fftree")
    for ident, start in (("000", 0.0), ("003", 1.5)):
        encode_clip(carphone, root / video_dir("original", "c23") / f"{ident}.mp4", start, 0.4)
    encode_clip(
        carphone, root / video_dir("original", "c23") / f"{NO_FACE}.mp4", 0, 0.4, vf="geq=lum=128:cb=128:cr=128"
    )
    (root / video_dir("original", "c23") / f"{BROKEN}.mp4").write_bytes(b"not a video")
    encode_clip(carphone, root / video_dir("FaceShifter", "c23") / "000_003.mp4", 0.0, 0.4, vf="hue=h=40")
    encode_clip(carphone, root / video_dir("DeepFakeDetection_original", "c23") / f"{ACTOR}.mp4", 2.0, 0.4)
    encode_clip(carphone, root / video_dir("DeepFakeDetection", "c23") / f"{DFD_FAKE}.mp4", 2.0, 0.4, vf="hue=h=90")
    (root / "splits").mkdir()
    for split, pairs in (("train", [[NO_FACE, BROKEN]]), ("val", []), ("test", [["000", "003"]])):
        (root / "splits" / f"{split}.json").write_text(json.dumps(pairs))
    return root


def entry(root: Path, methods: list[str], **kw) -> dict:
    return {"name": "fsh", "kind": "ffpp_tree", "root": str(root), "methods": methods, "frames_per_video": 2, **kw}


def test_faceshifter_crops_are_labelled_test_images_and_faceless_videos_are_reported(tree, tmp_path):
    dest = tmp_path / "fsh"
    scan = test_sources.scan_source(entry(tree, ["FaceShifter"]), dest, {"faces": FACES})

    t = scan.table
    assert sorted(t["path"]) == [
        "fake/FaceShifter/000_003_0003.png",
        "fake/FaceShifter/000_003_0009.png",
        "real/000_0003.png",
        "real/000_0009.png",
        "real/003_0003.png",
        "real/003_0009.png",
    ]
    assert (t["split"] == "test").all() and not scan.skipped
    assert dict(zip(t["path"].str.split("/").str[0], t["label"])) == {"real": 0, "fake": 1}
    assert set(t.loc[t["label"] == 1, "method"]) == {"FaceShifter"} and set(t.loc[t["label"] == 0, "method"]) == {
        "original"
    }
    # the faces stage's own crops, lossless, at the configured size
    with Image.open(dest / "images" / t["path"].iloc[0]) as im:
        assert (im.format, im.size) == ("PNG", (64, 64))
    # no face and no video: reported by path and reason, not fatal; the actors are not FaceShifter's originals
    reasons = dict(scan.left_out)
    assert sorted(reasons) == [f"original_sequences/youtube/c23/videos/{v}.mp4" for v in (NO_FACE, BROKEN)]
    assert "2 no_face" in reasons[f"original_sequences/youtube/c23/videos/{NO_FACE}.mp4"]
    assert (
        f"video unreadable: original_sequences/youtube/c23/videos/{BROKEN}.mp4"
        in reasons[f"original_sequences/youtube/c23/videos/{BROKEN}.mp4"]
    )
    images.write_scan(scan, dest / "images.parquet", dest / "scan.json")
    assert [r["path"] for r in json.loads((dest / "scan.json").read_text())["left_out"]] == sorted(reasons)

    # a rebuild with other settings leaves none of the last build's crops behind
    again = test_sources.scan_source(entry(tree, ["FaceShifter"], frames_per_video=1), dest, {"faces": FACES})
    assert len(again.table) == 3 and len(list((dest / "images").rglob("*.png"))) == 3


def test_deepfakedetection_pairs_its_fakes_with_the_actors(tree, tmp_path):
    scan = test_sources.scan_source(entry(tree, ["DeepFakeDetection"]), tmp_path / "dfd", {"faces": FACES})
    t = scan.table
    assert sorted(t["path"].str.rsplit("_", n=1).str[0].unique()) == [
        f"fake/DeepFakeDetection/{DFD_FAKE}",
        f"real/{ACTOR}",
    ]
    assert (t["split"] == "test").all() and sorted(set(t["method"])) == ["DeepFakeDetection", "original"]
    assert scan.left_out == []


def test_splits_dir_keeps_only_the_test_identities_of_youtube_videos(tree, tmp_path):
    scan = test_sources.scan_source(
        entry(tree, ["FaceShifter", "DeepFakeDetection"], splits_dir=str(tree / "splits")),
        tmp_path / "both",
        {"faces": FACES},
    )
    videos = set(scan.table["path"].str.split("/").str[-1].str.rsplit("_", n=1).str[0])
    assert videos == {"000", "003", "000_003", ACTOR, DFD_FAKE}  # 004 and 005 are train identities
    assert scan.left_out == []


def test_test_only_source_shards_have_an_empty_train_split(tree, tmp_path, cjpeg):
    dest = tmp_path / "fsh"
    scan = test_sources.scan_source(entry(tree, ["FaceShifter"], frames_per_video=1), dest, {"faces": FACES})
    root = test_sources.source_root(entry(tree, ["FaceShifter"]), dest)
    index = shards.write_source_shards(scan.table, root, 80, [], cjpeg, dest / "shards" / "q80")
    assert index["samples"] == 3
    assert json.loads((dest / "shards/q80/train.counts.json").read_text())["samples"] == 0
    assert not crossdataset.has_train_split(dest / "shards", [80])  # so no probe is trained on it


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"root": None}, r"evaluate.test_sources\[fsh\]: kind ffpp_tree needs `root`"),
        ({"root": "/nonexistent/ffpp"}, r"evaluate.test_sources\[fsh\]: root /nonexistent/ffpp is not a folder"),
        ({"methods": ["NeuralTextures"]}, r"NeuralTextures: .*manipulated_sequences/NeuralTextures/c23/videos"),
        ({"compression": "c40"}, r"original: .*original_sequences/youtube/c40/videos"),
        ({"methods": ["DeepfakeDetection"]}, r"unknown methods \['DeepfakeDetection'\]"),
    ],
)
def test_bad_root_or_method_is_named(tree, tmp_path, bad, message):
    with pytest.raises((FileNotFoundError, ValueError), match=message):
        test_sources.scan_source({**entry(tree, ["FaceShifter"]), **bad}, tmp_path, {"faces": FACES})
    assert not (tmp_path / "images").exists()


def test_local_tree_with_faceshifter_gets_its_pair_splits(tree):
    local.check_tree(tree, ["FaceShifter"], "c23")
    m = manifest.build(tree, tree / "splits", ["FaceShifter"], "c23", videos_per_job=10)
    fsh = m[m["method"] == "FaceShifter"]
    assert fsh[["video_id", "split", "label", "path"]].values.tolist() == [
        ["000_003", "test", 1, "manipulated_sequences/FaceShifter/c23/videos/000_003.mp4"]
    ]
    assert set(m["method"]) == {"original", "FaceShifter"}  # the actors are not read
