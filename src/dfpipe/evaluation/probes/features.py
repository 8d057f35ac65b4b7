"""Feature sets, the currency of the probes: features with one metadata row per sample, the getter type that
serves them to a probe table, and the two ways of combining sets (backbones side by side, datasets one after
another)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

META_COLUMNS = ["video_key", "method", "video_id", "frame_index", "label"]


@dataclass
class FeatureSet:
    """Features (N×D float32) and one metadata row per sample (`META_COLUMNS`), same order."""

    features: np.ndarray
    meta: pd.DataFrame
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def labels(self) -> np.ndarray:
        return self.meta["label"].to_numpy(dtype=int)


Getter = Callable[[str, Any, str, str], FeatureSet]  # (backbone, quality, split, transform) -> features


def concat(sets: Sequence[FeatureSet]) -> FeatureSet:
    """Features of several backbones side by side (the seed's multi-backbone probes); the samples must be the
    same and in the same order."""
    if not sets:
        raise ValueError("concat: no feature sets")
    first = sets[0].meta[["video_key", "frame_index"]].reset_index(drop=True)
    for other in sets[1:]:
        if not first.equals(other.meta[["video_key", "frame_index"]].reset_index(drop=True)):
            raise ValueError(
                "concat: feature sets hold different samples (or another order); extract them from the same shards"
            )
    return FeatureSet(
        np.hstack([s.features for s in sets]),
        sets[0].meta,
        {"backbone": "+".join(str(s.info.get("backbone", "?")) for s in sets)},
    )


def pool(sets: Mapping[str, FeatureSet]) -> FeatureSet:
    """The samples of several datasets ({name: features of one backbone}) one after another: a union to train
    on. Each video key gets its dataset's name in front, so that two datasets' videos never count as one (a
    video weighs 1 in thresholds and AUCs). `info` names the datasets and their sample counts."""
    if not sets:
        raise ValueError("pool: no feature sets")
    dims = {name: s.features.shape[1] for name, s in sets.items()}
    if len(set(dims.values())) > 1:
        raise ValueError(f"pool: the datasets' features differ in width {dims}; pool one backbone's features")
    metas = []
    for name, s in sets.items():
        meta = s.meta[META_COLUMNS].reset_index(drop=True).copy()
        meta["video_key"] = f"{name}/" + meta["video_key"].astype(str)
        metas.append(meta)
    first = next(iter(sets.values()))
    return FeatureSet(
        np.vstack([s.features for s in sets.values()]),
        pd.concat(metas, ignore_index=True),
        {"backbone": first.info.get("backbone", "?"), "datasets": {n: len(s.meta) for n, s in sets.items()}},
    )
