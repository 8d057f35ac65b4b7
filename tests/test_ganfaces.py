"""The GAN-face set: a tiny build (6 identities, the DigiFace DCGAN and MobileStyleGAN, 64² images) checked for
identical size and encoder path of real and fake images, FF++-like pair splits or the main dataset's, the detail
matching, determinism and idempotency."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from logcapture import dfpipe_lines
from PIL import Image

from dfpipe.evaluation.test_sources import ganfaces, images

SETTINGS = {
    "identities": 6,
    "generators": ["dcgan_digiface", "mobilestylegan_t0_6"],
    "views": 2,
    "size": 64,
    "native_size": 24,
    "pool": 2,
    "seed": 0,
}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path, list[str]]:
    root = tmp_path_factory.mktemp("ganfaces")
    with dfpipe_lines() as messages:
        split_file = ganfaces.build(root, SETTINGS)
    return root, split_file, messages


def _digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_real_and_fake_images_are_alike_but_for_the_generator(built):
    """Every image, real or fake, is a 64² 8-bit RGB PNG with the same PNG metadata; the classes are balanced
    and each generator has its own folder."""
    root, split_file, _ = built
    table = images.scan(root, split_file=split_file).table
    assert sorted(table["method"].unique()) == ["dcgan_digiface", "mobilestylegan_t0_6", "original"]
    assert (table["label"] == 0).sum() == (table["label"] == 1).sum() == 12
    assert set(table["encoding"]) == {"png"} and set(table["width"]) == set(table["height"]) == {64}
    formats = set()
    for rel in table["path"]:
        with Image.open(root / rel) as im:
            formats.add((im.format, im.mode, im.size, tuple(sorted(im.info))))
    assert len(formats) == 1, formats


def test_one_encoder_path_for_both_classes(built, cjpeg):
    """Through the image-folder source into MozJPEG, real and fake crops get the same encoder string and come
    out the same size and JPEG kind (progressive, same sampling and quantisation tables)."""
    root, split_file, _ = built
    table = images.scan(root, split_file=split_file).table
    out = images.compress_images(table, root, 60, [], cjpeg)
    assert len(out) == len(table) and out["encoder"].nunique() == 1
    kinds = set()
    for jpg, label in zip(out["jpeg"], out["label"]):
        im = Image.open(io.BytesIO(jpg))
        kinds.add(
            (
                label,
                im.size,
                im.info.get("progressive"),
                tuple(map(tuple, im.layer)),
                tuple(tuple(t) for t in im.quantization.values()),
            )
        )
    assert {k[1:] for k in kinds if k[0] == 0} == {k[1:] for k in kinds if k[0] == 1}
    assert len({k[1:] for k in kinds}) == 1


def test_identities_split_like_ffpp_pairs(built):
    """Pairs stay in one split; an identity's real frames and the fakes generated under its number share it; every
    split holds both classes."""
    root, split_file, _ = built
    table = images.scan(root, split_file=split_file).table
    table["ident"] = table["path"].str.split("/").str[-2]
    per_ident = table.groupby("ident")["split"].agg(set)
    assert all(len(s) == 1 for s in per_ident)
    record = json.loads((root / "sources.json").read_text())
    for split, idents in record["splits"].items():
        assert {next(iter(per_ident[i])) for i in idents} <= {split}
    for pair in ([f"{i:03d}", f"{i + 1:03d}"] for i in range(0, 6, 2)):  # FF++-like pairs stay together
        assert len({next(iter(per_ident[i])) for i in pair}) == 1
    assert table.groupby("split")["label"].nunique().eq(2).all()
    assert set(table["split"]) == {"train", "val", "test"}


def test_build_is_deterministic_and_idempotent(built, tmp_path):
    """A second build is a no-op; a build elsewhere gives the same bytes (f32 GAN on one thread, cached)."""
    root, _, _ = built
    with dfpipe_lines() as messages:
        ganfaces.build(root, SETTINGS)
    assert messages == [f"ganfaces: {root} is up to date"]
    ganfaces.build(tmp_path / "again", SETTINGS)
    assert _digests(tmp_path / "again") == _digests(root)


def test_defaults_are_the_config_schemas():
    """The set's defaults live in the config schema (a test source's ganfaces settings), as validation fills them."""
    from dfpipe import config

    entry = {"name": "gan", "kind": "ganfaces"}
    filled = config.validate({"evaluate": {"test_sources": [entry]}})["evaluate"]["test_sources"][0]["ganfaces"]
    assert ganfaces.DEFAULTS == filled
    assert ganfaces.DEFAULTS["generators"] == [ganfaces.DCGAN] and ganfaces.DEFAULTS["identities"] is None


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="ganfaces.identities = 5"):
        ganfaces.build(Path("unused"), {"identities": 5})
    with pytest.raises(ValueError, match="unknown keys"):
        ganfaces.build(Path("unused"), {"faces": 3})
    with pytest.raises(ValueError, match="ganfaces.generators"):
        ganfaces.build(Path("unused"), {"generators": ["dcgan_digiface", "dcgan_digiface"]})
    with pytest.raises(ValueError, match="ganfaces.generators"):
        ganfaces.build(Path("unused"), {"generators": ["mobilestylegan_t2"]})
    with pytest.raises(ValueError, match="ganfaces.views = 1"):
        ganfaces.build(Path("unused"), {"views": 1, "generators": ["dcgan_digiface", "mobilestylegan_t1"]})


def test_splits_follow_the_main_dataset_and_unused_faces_join_test():
    """When the main dataset is the demo, an identity it trains or validates on keeps that split here, and the
    faces it does not use (numbers past its identities) are test identities."""
    main = ganfaces.main_identity_splits("demo", {"identities": 8, "seed": 0})
    assert sorted(main) == [f"{i:03d}" for i in range(8)] and set(main.values()) == {"train", "val", "test"}
    splits = ganfaces.assign_splits([f"{i:03d}" for i in range(12)], main, seed=0)
    for split in ("train", "val"):
        assert splits[split] == sorted(i for i, s in main.items() if s == split)
    assert set(splits["test"]) == {i for i, s in main.items() if s == "test"} | {"008", "009", "010", "011"}
    assert ganfaces.main_identity_splits("local", {}) == {}


def test_matching_gives_each_real_view_the_nearest_distinct_draw():
    real = np.array([[1.0, 1.0], [5.0, 5.0], [5.1, 5.1]])
    pool = np.array([[0.0, 0.0], [5.0, 5.0], [1.1, 0.9], [9.0, 9.0], [5.2, 5.2]])
    chosen = ganfaces.match(real, pool)
    assert len(set(chosen)) == 3 and chosen[0] == 2 and set(chosen[1:]) == {1, 4}
