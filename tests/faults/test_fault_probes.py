"""Faults under probe feature extraction (dfpipe.evaluation.probes): a damaged shard, a damaged or foreign feature cache.

Features come from a small randomly initialised timm model given as a weights file (the offline path of the
CLIP/DINO backbones) on real shards written by the shards stage."""

from __future__ import annotations

import json

import numpy as np
import pytest
import timm
import torch
from test_loader import Q, make_shards, videos

from dfpipe.evaluation import probes
from dfpipe.evaluation.probes import build


@pytest.fixture()
def setup(tmp_path):
    torch.manual_seed(0)
    weights = tmp_path / "tiny.pth"
    torch.save(timm.create_model("resnet10t", num_classes=0).state_dict(), weights)
    spec = probes.backbone_spec("tiny", {"model": "resnet10t", "weights": str(weights), "input_size": 32})
    shards = make_shards(tmp_path / "shards", "test", videos(2, 2), n_shards=1)
    probes.BUILT.clear()
    return spec, shards, tmp_path / "cache"


def _features(spec, shards, cache):
    return probes.shard_features(spec, shards, dataset="d", quality=Q, split="test", cache_dir=cache)


def test_shard_cut_under_extraction(setup, tmp_path):
    """A shard cut mid-sample under feature extraction: stops naming the shard and how to rebuild it; nothing cached; the rebuilt shard gives the same features."""
    spec, shards, cache = setup
    reference = _features(spec, shards, tmp_path / "reference").features
    whole = shards[0].read_bytes()
    shards[0].write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match=rf"{shards[0].name}: truncated.*delete it and rerun snakemake"):
        _features(spec, shards, cache)
    assert not cache.exists() or not list(cache.rglob("*.*"))
    shards[0].write_bytes(whole)
    np.testing.assert_array_equal(_features(spec, shards, cache).features, reference)


def test_feature_cache_damaged_or_foreign(setup, monkeypatch):
    """A feature cache cut short (.npy truncated) or made with other weights (manifest): recomputed from the shards, not loaded."""
    spec, shards, cache = setup
    first = _features(spec, shards, cache).features
    npy, _, manifest = probes.cache_paths(cache, "d", "tiny", Q, "test", "none")
    builds = []
    real_build = build.build_backbone
    monkeypatch.setattr(build, "build_backbone", lambda *a: builds.append(1) or real_build(*a))

    npy.write_bytes(npy.read_bytes()[:200])
    probes.BUILT.clear()
    np.testing.assert_array_equal(_features(spec, shards, cache).features, first)
    assert builds == [1]

    record = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**record, "weights": "file:other.pth:sha256:0000"}))
    probes.BUILT.clear()
    np.testing.assert_array_equal(_features(spec, shards, cache).features, first)
    assert builds == [1, 1]
    assert json.loads(manifest.read_text())["weights"] == record["weights"]  # rewritten for the real weights

    _features(spec, shards, cache)  # intact again: read, not rebuilt
    assert builds == [1, 1]
