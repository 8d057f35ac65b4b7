"""Probes scored across datasets (dfpipe.evaluation.probes.routing) on small real tables: test sets of other datasets
routed through one fit, the union of datasets, and the matrix rows they give."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dfpipe.config import UNION
from dfpipe.evaluation import crossdataset, probes
from dfpipe.evaluation.probes import routing


def _fs(label_shift: float, n: int = 40) -> probes.FeatureSet:
    rng = np.random.default_rng(0)
    y = np.arange(n) % 2
    x = (rng.normal(size=(n, 6)) + label_shift * y[:, None]).astype(np.float32)
    meta = pd.DataFrame(
        {"video_key": [f"v{i}" for i in range(n)], "method": "m", "video_id": "x", "frame_index": 0, "label": y}
    )
    return probes.FeatureSet(x, meta)


def test_one_fit_scores_the_main_and_the_routed_dataset():
    """A probe fitted once is scored on the main test split and on another dataset's (a TestSet)."""
    calls = []

    def main(b, q, split, t):
        calls.append(("main", q, split))
        return _fs(2.0)

    def other(b, q, split, t):
        calls.append(("gan", q, split))
        return _fs(-2.0)  # the opposite direction: a probe from main ranks these backwards

    table = probes.probe_table(
        routing.routed_getter(main, {"gan": other}),
        backbones=["b"],
        train_qualities=[95],
        test_qualities=[95, routing.TestSet("gan", 95)],
        reductions=["none"],
        classifiers=["linear_probe"],
        transforms=["none"],
        n_boot=0,
    )
    own, routed = routing.split_routed(table)
    assert list(own["test_quality"]) == [95] and own["auc"].iloc[0] > 0.9
    assert list(routed) == ["gan"] and routed["gan"]["auc"].iloc[0] < 0.1
    assert list(routed["gan"]["test_quality"]) == [95]
    assert ("gan", 95, "test") in calls and ("gan", 95, "train") not in calls
    rows = crossdataset.probe_rows(routed["gan"], "demo", "gan")
    assert list(rows.columns) == crossdataset.MATRIX_COLUMNS and rows["model"].iloc[0] == "b/none/linear_probe/none"


def _fs_on(column: int, n: int = 40, seed: int = 0, prefix: str = "v") -> probes.FeatureSet:
    """`n` samples, fakes shifted along feature `column` only: a probe learns that one direction."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.normal(size=(n, 4)).astype(np.float32)
    x[:, column] += 3.0 * y
    meta = pd.DataFrame(
        {"video_key": [f"{prefix}{i}" for i in range(n)], "method": "m", "video_id": "x", "frame_index": 0, "label": y}
    )
    return probes.FeatureSet(x, meta)


def test_union_and_every_dataset_trained_probe_cover_the_source_by_source_matrix():
    """Probes trained on each dataset and on their union (train and val features of both pooled) are each fitted
    once per setting and scored on every dataset's test split; the matrix rows cover every (train, test) pair."""
    calls = []

    def dataset(name, column, has_val=True):
        def get(b, q, split, t):
            if split == "val" and not has_val:
                raise FileNotFoundError("no val shards")
            calls.append((name, b, q, split))
            # the same video keys in both datasets: the union must keep their videos apart
            return _fs_on(column, n={"train": 40, "val": 20, "test": 30}[split], seed=len(split) + column)

        return get

    datasets = {"demo": dataset("demo", 0), "gan": dataset("gan", 1), "faces": dataset("faces", 1, has_val=False)}

    union = routing.union_getter({k: datasets[k] for k in ("demo", "gan", "faces")})
    pooled = union("b", 95, "train", "none")
    parts = [datasets[k]("b", 95, "train", "none") for k in ("demo", "gan", "faces")]
    assert np.array_equal(pooled.features, np.vstack([p.features for p in parts]))
    assert pooled.labels.tolist() == [y for p in parts for y in p.labels]
    assert pooled.meta["video_key"].nunique() == 120 and pooled.meta["video_key"].iloc[40] == "gan/v0"
    assert len(union("b", 95, "val", "none").meta) == 40  # faces has no val split: the others' val serves
    with pytest.raises(ValueError, match="no test split"):
        union("b", 95, "test", "none")

    datasets.pop("faces")
    settings = dict(
        backbones=["b"],
        train_qualities=[95],
        reductions=["none"],
        classifiers=["linear_probe"],
        transforms=["none"],
        n_boot=0,
    )
    tables, rows = {}, []
    trainers = [*datasets.items(), (UNION, routing.union_getter(datasets))]
    for name, get in trainers:
        own = name if name in datasets else None
        calls.clear()
        tables[name] = probes.probe_table(
            routing.routed_getter(get, datasets),
            test_qualities=routing.routed_qualities([95, 50], datasets, own=own),
            **settings,
        )
        # one fit per setting: the training data read once, every dataset's test split at each quality
        assert sorted(c for c in calls if c[3] == "test") == [(d, "b", q, "test") for d in datasets for q in (50, 95)]
        trained = {c[0] for c in calls if c[3] == "train"}
        assert trained == (set(datasets) if own is None else {name})
        rows.append(routing.routed_probe_rows(tables[name], name))
    matrix = pd.concat(rows, ignore_index=True)
    assert list(matrix.columns) == crossdataset.MATRIX_COLUMNS
    pairs = matrix.groupby(["train_dataset", "test_dataset"])["test_quality"].apply(sorted).to_dict()
    assert pairs == {(tr, te): [50, 95] for tr in ("demo", "gan", "union") for te in ("demo", "gan")}
    auc = matrix.groupby(["train_dataset", "test_dataset"])["auc"].mean()
    # each dataset's probe knows its own direction only; the union's probe learnt both
    assert auc["demo", "demo"] > 0.9 and auc["gan", "gan"] > 0.9
    assert abs(auc["demo", "gan"] - 0.5) < 0.25 and abs(auc["gan", "demo"] - 0.5) < 0.25
    assert auc["union", "demo"] > auc["gan", "demo"] + 0.2 and auc["union", "gan"] > auc["demo", "gan"] + 0.2
    assert auc["union", "demo"] > 0.8 and auc["union", "gan"] > 0.8
    assert tables[UNION]["auc_val"].notna().all()
