"""Test settings beyond MozJPEG (dfpipe.axes): MozJPEG's bytes unchanged, each codec's files decode to the crop's
size with the bpp they record, perturbations touch test crops only, the platform re-encode is reproducible,
shards of a setting load, and the bitrate tables interpolate as documented."""

from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pandas as pd
import pytest
from test_compress import faces_table

from dfpipe import axes
from dfpipe import config as dfconfig
from dfpipe.data import codecs, perturb, platform, setting_crops, shards
from dfpipe.data.compress import compress_batch, decode_rgb
from dfpipe.data.loader import ShardStream, decode_image, index_shards
from dfpipe.evaluation import bitrate

# sha256 of the JPEG bytes of `faces_table()`'s crops, recorded before the test settings existed: the MozJPEG
# path must keep writing exactly these files (a new MozJPEG version or flag handling would change them).
MOZJPEG_SHA256 = {
    (77, ()): "57ec148a6a86c7eaa0f86e7882144077fab92975c80dd057e07030e3358f7d0b",
    (10, ("-tune-ssim",)): "f5c5c9f47cf5b5363e0cd1111e69ef51ad3aef08790fadca2ece7e7966bedf72",
}


def split_faces() -> pd.DataFrame:
    """`faces_table()` with its videos spread over the splits: the original in test, the fake in train, plus a
    val copy of the original."""
    faces = faces_table()
    faces.loc[faces["method"] == "original", "split"] = "test"
    val = faces[faces["method"] == "original"].assign(split="val", key="original/001", video_id="001")
    return pd.concat([faces, val], ignore_index=True)


@pytest.mark.parametrize(("quality", "flags"), list(MOZJPEG_SHA256))
def test_mozjpeg_files_are_unchanged_byte_for_byte(cjpeg, quality, flags):
    table = compress_batch(faces_table(), quality, list(flags), cjpeg, threads=2)
    assert hashlib.sha256(b"".join(table["jpeg"])).hexdigest() == MOZJPEG_SHA256[(quality, flags)]


@pytest.mark.parametrize("codec", ["libjpeg-turbo", "webp", "avif", "jxl"])
def test_each_codec_decodes_to_the_crop_size_and_its_bpp_matches_the_file(codec):
    setting = axes.codec_setting(codec, 40)
    faces = split_faces()
    table = setting_crops.setting_batch(faces, setting, threads=2)
    test_rows = faces[(faces["split"] == "test") & (faces["status"] == "ok")]
    assert len(table) == len(test_rows) == 3 and set(table["split"]) == {"test"}
    for rec in table.itertuples(index=False):
        crop = decode_rgb(test_rows.set_index("frame_index").loc[rec.frame_index, "crop_png"])
        decoded = codecs.decode(rec.image)
        assert decoded.shape == crop.shape == (72, 64, 3)
        assert rec.bytes == len(rec.image) and rec.bpp == pytest.approx(8 * len(rec.image) / (72 * 64))
        assert np.abs(decoded.astype(int) - crop).mean() < 12  # close to the crop: it is that crop, encoded
    assert table["encoder"].iloc[0].startswith(codecs.library_version(codec))
    # the codec's own container, which the loader also reads (Pillow, or libjxl for JPEG XL)
    assert np.array_equal(np.asarray(decode_image(table["image"].iloc[0])), codecs.decode(table["image"].iloc[0]))


def test_lower_quality_gives_fewer_bits_for_every_codec():
    rgb = decode_rgb(faces_table()["crop_png"].iloc[0])
    for codec in ("libjpeg-turbo", "webp", "avif", "jxl"):
        assert len(codecs.encode(rgb, codec, 20)) < len(codecs.encode(rgb, codec, 90)), codec


@pytest.mark.parametrize(("kind", "level"), [("resize", 0.5), ("blur", 1.5), ("noise", 8.0)])
def test_a_perturbation_is_applied_to_test_crops_only(kind, level):
    setting = axes.perturb_setting(kind, level)
    faces = split_faces()
    table = setting_crops.setting_batch(faces, setting)
    assert set(table["split"]) == {"test"} and len(table) == 3  # train and val crops are never perturbed
    assert table["bpp"].isna().all()  # a PNG's size is not the perturbation's bitrate
    for rec, crop_png in zip(table.itertuples(index=False), faces.loc[faces["split"] == "test", "crop_png"]):
        crop, out = decode_rgb(crop_png), codecs.decode(rec.image)
        assert out.shape == crop.shape and not np.array_equal(out, crop)
    # reproducible: noise is seeded by the crop's name, so a rerun writes the same bytes
    assert setting_crops.setting_batch(faces, setting)["image"].tolist() == table["image"].tolist()


def test_perturbation_strength_grows_with_its_level():
    rgb = decode_rgb(faces_table()["crop_png"].iloc[0]).astype(float)
    for kind, low, high in (("resize", 0.75, 0.25), ("blur", 0.5, 3.0), ("noise", 2.0, 20.0)):
        err = [np.abs(perturb.apply(rgb.astype(np.uint8), kind, lv, "x") - rgb).mean() for lv in (low, high)]
        assert err[0] < err[1], kind


def test_platform_reencode_is_reproducible_and_smaller_at_a_higher_crf(carphone, tmp_path):
    a, b, c = tmp_path / "a.mp4", tmp_path / "b.mp4", tmp_path / "c.mp4"
    platform.reencode(carphone, 30, a)
    platform.reencode(carphone, 30, b)
    platform.reencode(carphone, 45, c)
    assert a.read_bytes() == b.read_bytes()
    assert c.stat().st_size < a.stat().st_size


def test_setting_shards_load_with_their_setting_and_refuse_another(tmp_path):
    setting = axes.codec_setting("webp", 60)
    table = setting_crops.setting_batch(split_faces(), setting)
    counts = shards.write_split([table], setting, "test", 1, tmp_path / setting.name)
    assert counts["samples"] == 3 and counts["setting"] == "webp-q60" and counts["quality"] is None
    stream = ShardStream([tmp_path / "webp-q60" / "test-0000.tar"], batch_size=2, input_size=32, train=False)
    metas = [m for _, _, meta in stream for m in meta["video_key"]]
    assert metas == ["original/webp-q60/000"] * 3
    with pytest.raises(ValueError, match="holds setting"):
        shards.write_split([table], axes.codec_setting("webp", 30), "test", 1, tmp_path / "webp-q30")


def test_a_damaged_or_misplaced_setting_image_is_named(tmp_path):
    setting = axes.codec_setting("jxl", 70)
    table = setting_crops.setting_batch(split_faces(), setting)
    table.at[1, "image"] = table.at[1, "image"][:40]  # truncated: JPEG XL's signature, no image
    shards.write_split([table], setting, "test", 1, tmp_path / setting.name)
    shard = tmp_path / "jxl-q70" / "test-0000.tar"
    with pytest.raises(ValueError, match=r"jxl-q70/test-0000.tar: sample \S+ is not a readable image"):
        list(ShardStream([shard], batch_size=4, input_size=32, train=False))
    # a shard under another setting's folder: its images are not what that folder holds
    moved = tmp_path / "webp-q70" / "test-0000.tar"
    moved.parent.mkdir()
    shutil.copy(shard, moved)
    with pytest.raises(ValueError, match=r"webp-q70/test-0000.tar: sample \S+ lacks \['webp'\]"):
        index_shards([moved])


def test_setting_names_and_config_checks():
    config = dfconfig.validate(
        {
            "compress": {"codecs": [{"codec": "libjpeg-turbo", "qualities": [75]}], "platform": {"crfs": [23]}},
            "perturb": [{"kind": "resize", "levels": [0.5]}, {"kind": "noise", "levels": [2.5]}],
        }
    )
    assert [s.name for s in axes.configured_settings(config)] == [
        "turbo-q75",
        "h264-crf23",
        "resize-x0.5",
        "noise-s2.5",
    ]
    with pytest.raises(dfconfig.ConfigError, match=r"resize levels are scales in \(0, 1\]"):
        dfconfig.validate({"perturb": [{"kind": "resize", "levels": [2]}]})
    with pytest.raises(dfconfig.ConfigError, match="configured twice"):
        dfconfig.validate({"perturb": [{"kind": "blur", "levels": [1]}, {"kind": "blur", "levels": [1.0]}]})
    # the test settings stay out of what the result tables hash: adding one does not rerun them
    assert dfconfig.tables_config(config) == dfconfig.tables_config(dfconfig.validate({}))


def robust_rows(codec: str, points: list[tuple[float, float]], kind: str = "codec") -> list[dict]:
    return [
        {
            "detector": "d",
            "train_quality": 95,
            "setting": f"{codec}{i}",
            "kind": kind,
            "codec": codec,
            "level": i,
            "bpp": bpp,
            "n": 10,
            "auc": auc,
            "auc_lo": np.nan,
            "auc_hi": np.nan,
        }
        for i, (bpp, auc) in enumerate(points)
    ]


def test_auc_at_bpp_interpolates_in_log_bpp_and_never_extrapolates():
    robust = pd.DataFrame(
        robust_rows("webp", [(0.25, 0.6), (1.0, 0.8), (4.0, 0.9)])
        + robust_rows("turbo", [(2.0, 0.7)])
        + robust_rows("h264", [(0.5, 0.55), (1.0, 0.65)], kind="video")
    )
    table = bitrate.auc_at_bpp(robust, [0.5, 2.0, 8.0]).set_index("codec")
    assert table.loc["webp", "auc@0.5bpp"] == pytest.approx(0.7)  # halfway between 0.25 and 1 in log2
    assert table.loc["webp", "auc@2bpp"] == pytest.approx(0.85)
    assert np.isnan(table.loc["webp", "auc@8bpp"])  # beyond the measured range
    assert np.isnan(table.loc["turbo", "auc@2bpp"])  # one level: no line to read from
    assert "h264" not in table.index  # a video's bpp is not a crop's


def test_rate_distortion_takes_mozjpeg_from_the_test_videos_only():
    moz = pd.DataFrame(
        {
            "key": ["a", "a", "b"],
            "quality": [95, 95, 95],
            "psnr": [40.0, 42.0, 10.0],
            "ssim": [0.9, 0.9, 0.1],
            "bpp": [2.0, 2.0, 9.0],
        }
    )
    other = pd.DataFrame(
        {"setting": ["blur-s1"], "psnr": [30.0], "ssim": [0.8], "bpp": [np.nan], "encoder": ["opencv blur"]}
    )
    settings = bitrate.describe([95], [axes.perturb_setting("blur", 1)])
    rd = bitrate.rate_distortion(moz, other, ["a"], settings, lambda q: f"cjpeg -quality {q}").set_index("setting")
    assert rd.loc["q95", "encoder"] == "cjpeg -quality 95" and rd.loc["blur-s1", "encoder"] == "opencv blur"
    assert rd.loc["q95", "psnr_mean"] == 41.0 and rd.loc["q95", "n"] == 2 and rd.loc["q95", "codec"] == "mozjpeg"
    assert np.isnan(rd.loc["blur-s1", "bpp"]) and rd.loc["blur-s1", "kind"] == "perturb"
