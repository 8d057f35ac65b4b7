"""Probe features from images: one forward pass of a frozen backbone per crop, for in-memory images or for the
samples of declared shard tars, cached on disk as `.npy` + a `.parquet` of sample metadata + a `.json` manifest.
A second call with the same inputs reads the cache and never builds the backbone."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from dfpipe.config import schema_defaults
from dfpipe.data.loader import ShardStream, expected_shard, index_shards, make_loader
from dfpipe.evaluation.probes.backbones import BackboneSpec, input_config, weights_id
from dfpipe.evaluation.probes.build import Backbone, shared_backbone
from dfpipe.evaluation.probes.features import META_COLUMNS, FeatureSet, Getter
from dfpipe.evaluation.probes.transforms import check_transform, normalise, resize_batch, transformer
from dfpipe.io import atomic_path, write_json, write_parquet

FORMAT_VERSION = 1
# default arguments below are the config schema's (probes section), so a call outside the workflow scores alike
_DEFAULTS = schema_defaults("probes")


def extract_features(
    backbone: Backbone,
    batches: Iterable[Tensor],
    transform: str = "none",
    seed: int = 0,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """N×D float32 features of uint8 N×3×H×W batches (already at the backbone's input size), one forward
    pass per image. `transform` is applied to each image first, seeded by its place in the stream."""
    device = device or next(backbone.module.parameters()).device
    apply = transformer(transform, seed)
    out, seen = [], 0
    with torch.inference_mode():
        for batch in batches:
            if apply is not None:
                batch = torch.stack([apply(img, seen + i) for i, img in enumerate(batch)])
            seen += len(batch)
            x = normalise(batch.to(device, non_blocking=True), backbone.mean, backbone.std)
            feats = backbone.module(x)
            out.append(feats.float().flatten(1).cpu().numpy())
    if not out:
        raise ValueError("extract_features: no images")
    return np.concatenate(out)


# -- the cache ---------------------------------------------------------------------------------------------


def shards_fingerprint(shards: Sequence[Path]) -> str:
    """Identity of a shard set from the tar headers (the loader's index: every sample's shard, key, label and
    member sizes) and the index/counts files the shards stage writes beside them; no JPEG is read."""
    shards = [Path(s) for s in shards]
    digest = hashlib.sha256()
    for e in index_shards(shards):
        digest.update(f"{shards[e.shard].name}/{e.key}:{e.label}:{e.image[1]}:{e.json[1]}\n".encode())
    for folder in sorted({s.parent for s in shards}):
        for extra in sorted([*folder.glob("index.json"), *folder.glob("*.counts.json")]):
            digest.update(extra.name.encode() + b"\0" + extra.read_bytes())
    return digest.hexdigest()[:16]


def cache_paths(
    cache_dir: Path, dataset: str, backbone: str, quality: int | str, split: str, transform: str
) -> tuple[Path, Path, Path]:
    """(features .npy, metadata .parquet, manifest .json) of one cached feature set."""
    stem = Path(cache_dir) / dataset / backbone / f"q{quality}" / f"{split}-{transform}"
    return stem.with_suffix(".npy"), stem.with_suffix(".parquet"), stem.with_suffix(".json")


def cache_key(
    spec: BackboneSpec, dataset: str, quality: int | str, split: str, transform: str, seed: int, fingerprint: str
) -> dict[str, Any]:
    """What a cached feature set was made from (its manifest holds it); a cache whose manifest differs is
    recomputed."""
    check_transform(transform)
    size, _, _ = input_config(spec)
    return {
        "format": FORMAT_VERSION,
        "dataset": dataset,
        "backbone": spec.name,
        "kind": spec.kind,
        "weights": weights_id(spec),
        "input_size": size,
        "quality": quality,
        "split": split,
        "transform": transform,
        "seed": seed if transform != "none" else 0,
        "fingerprint": fingerprint,
    }


def _cached(cache_dir: Path, key: dict[str, Any]) -> FeatureSet | None:
    npy, meta, manifest = cache_paths(
        cache_dir, key["dataset"], key["backbone"], key["quality"], key["split"], key["transform"]
    )
    try:
        record = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return None
    if any(record.get(k) != v for k, v in key.items()):
        return None
    try:
        features = np.load(npy, allow_pickle=False)
        table = pd.read_parquet(meta)
    except (OSError, ValueError):
        return None
    if list(features.shape) != record.get("shape") or len(table) != features.shape[0]:
        return None
    return FeatureSet(features, table, record)


def _store(cache_dir: Path, key: dict[str, Any], fs: FeatureSet, backbone: Backbone) -> FeatureSet:
    npy, meta, manifest = cache_paths(
        cache_dir, key["dataset"], key["backbone"], key["quality"], key["split"], key["transform"]
    )
    with atomic_path(npy) as tmp, open(tmp, "wb") as f:
        np.save(f, fs.features.astype(np.float32), allow_pickle=False)
    write_parquet(meta, fs.meta[META_COLUMNS])
    record = {
        **key,
        "shape": list(fs.features.shape),
        "model": backbone.spec.model,
        "weights_source": backbone.weights_source,
    }
    write_json(manifest, record)  # last: a manifest only ever describes complete arrays
    fs.info = record
    return fs


# -- cached features of shards and of arrays ------------------------------------------------------------------


def shard_features(
    spec: BackboneSpec,
    shards: Sequence[Path],
    *,
    dataset: str,
    quality: int,
    split: str,
    cache_dir: Path,
    transform: str = "none",
    seed: int = 0,
    batch_size: int = _DEFAULTS["batch_size"],
    device: str = "cpu",
    num_workers: int = 0,
    builder: Callable[[BackboneSpec, str], Backbone] | None = None,
) -> FeatureSet:
    """Features of every sample of `shards` (one quality and split, in shard order), cached; see module doc."""
    key = cache_key(spec, dataset, quality, split, transform, seed, shards_fingerprint(shards))
    hit = _cached(cache_dir, key)
    if hit is not None:
        return hit
    backbone = (builder or shared_backbone)(spec, device)
    stream = ShardStream(
        shards, batch_size=batch_size, input_size=backbone.input_size, train=False, quality=quality, split=split
    )
    metas: list[pd.DataFrame] = []

    def images() -> Iterator[Tensor]:
        for imgs, _, meta in make_loader(stream, num_workers=num_workers):
            metas.append(pd.DataFrame({c: meta[c] for c in META_COLUMNS}))
            yield imgs

    feats = extract_features(backbone, images(), transform, seed, device)
    meta = pd.concat(metas, ignore_index=True)
    meta["label"] = meta["label"].astype(int)
    return _store(cache_dir, key, FeatureSet(feats, meta), backbone)


def array_features(
    spec: BackboneSpec,
    images: np.ndarray,
    meta: pd.DataFrame,
    *,
    dataset: str,
    split: str,
    cache_dir: Path,
    quality: int | str = "na",
    transform: str = "none",
    seed: int = 0,
    batch_size: int = _DEFAULTS["batch_size"],
    device: str = "cpu",
    builder: Callable[[BackboneSpec, str], Backbone] | None = None,
) -> FeatureSet:
    """Features of RGB uint8 `images` (N×H×W×3) with metadata `meta` (needs `label`; other `META_COLUMNS`
    are filled from the row number when absent), cached; the fingerprint is a hash of the pixels and labels."""
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"array_features: need N×H×W×3 uint8 images, got {images.shape} {images.dtype}")
    if len(meta) != len(images) or "label" not in meta:
        raise ValueError(f"array_features: meta needs a `label` column and one row per image ({len(images)})")
    meta = meta.reset_index(drop=True).copy()
    for col, default in (
        ("video_id", meta.index.astype(str)),
        ("method", np.where(meta["label"] == 1, "fake", "original")),
        ("frame_index", 0),
    ):
        if col not in meta:
            meta[col] = default
    if "video_key" not in meta:
        meta["video_key"] = meta["method"].astype(str) + "/" + meta["video_id"].astype(str)
    meta["label"] = meta["label"].astype(int)
    digest = hashlib.sha256(np.ascontiguousarray(images).tobytes())
    digest.update(meta[META_COLUMNS].to_csv(index=False).encode())
    key = cache_key(spec, dataset, quality, split, transform, seed, digest.hexdigest()[:16])
    hit = _cached(cache_dir, key)
    if hit is not None:
        return hit
    backbone = (builder or shared_backbone)(spec, device)
    batches = (resize_batch(images[a : a + batch_size], backbone.input_size) for a in range(0, len(images), batch_size))
    feats = extract_features(backbone, batches, transform, seed, device)
    return _store(cache_dir, key, FeatureSet(feats, meta[META_COLUMNS]), backbone)


def shard_sets(shards: Iterable[str | Path]) -> dict[tuple[int, str], list[Path]]:
    """Shard tars (`.../q{Q}/{split}-NNNN.tar`) by (quality, split), each set in name order."""
    sets: dict[tuple[int, str], list[Path]] = {}
    for path in map(Path, shards):
        sets.setdefault(expected_shard(path), []).append(path)
    return {k: sorted(v) for k, v in sets.items()}


def shard_getter(
    shards: Iterable[str | Path],
    *,
    dataset: str,
    cache_dir: Path,
    specs: Mapping[str, BackboneSpec],
    seed: int = 0,
    batch_size: int = _DEFAULTS["batch_size"],
    device: str = "cpu",
    num_workers: int = 0,
    train_shards: int | None = None,
) -> Getter:
    """A `probe_table` getter over the shard tars `shards` of one dataset (`.../q{Q}/{split}-NNNN.tar`: a job's
    declared inputs; other tars in their folders are never read): (backbone, quality, split, transform) ->
    cached `shard_features` with the backbone's spec from `specs`. With `train_shards`, probes train on the
    first that many train shards only: a subsample of whole videos (what keeps the demo's probes short)."""
    sets = shard_sets(shards)

    def get(backbone: str, quality: Any, split: str, transform: str) -> FeatureSet:
        if backbone not in specs:
            raise KeyError(f"probes: backbone {backbone!r} is not configured; configured: {sorted(specs)}")
        chosen = sets.get((int(quality), split), [])
        if split == "train" and train_shards:
            chosen = chosen[:train_shards]
        if not chosen:
            raise FileNotFoundError(f"{dataset} q{quality}: no {split} shards; build them first (`snakemake data`)")
        return shard_features(
            specs[backbone],
            chosen,
            dataset=dataset,
            quality=int(quality),
            split=split,
            cache_dir=cache_dir,
            transform=transform,
            seed=seed,
            batch_size=batch_size,
            device=device,
            num_workers=num_workers,
        )

    return get
