"""Cross-dataset helpers on small real tables: routed test qualities and detector rows."""

from __future__ import annotations

import numpy as np
import pandas as pd

from dfpipe import crossdataset, probes


def _fs(label_shift: float, n: int = 40) -> probes.FeatureSet:
    rng = np.random.default_rng(0)
    y = np.arange(n) % 2
    x = (rng.normal(size=(n, 6)) + label_shift * y[:, None]).astype(np.float32)
    meta = pd.DataFrame(
        {"video_key": [f"v{i}" for i in range(n)], "method": "m", "video_id": "x", "frame_index": 0, "label": y}
    )
    return probes.FeatureSet(x, meta)


def test_one_fit_scores_the_main_and_the_routed_dataset():
    """A probe fitted once is scored on the main test split and on "name:Q" of another dataset."""
    calls = []

    def main(b, q, split, t):
        calls.append(("main", q, split))
        return _fs(2.0)

    def other(b, q, split, t):
        calls.append(("gan", q, split))
        return _fs(-2.0)  # the opposite direction: a probe from main ranks these backwards

    table = probes.probe_table(
        crossdataset.routed_getter(main, {"gan": other}),
        backbones=["b"],
        train_qualities=[95],
        test_qualities=[95, "gan:95"],
        reductions=["none"],
        classifiers=["linear_probe"],
        transforms=["none"],
        n_boot=0,
    )
    own, routed = crossdataset.split_routed(table)
    assert list(own["test_quality"]) == [95] and own["auc"].iloc[0] > 0.9
    assert list(routed) == ["gan"] and routed["gan"]["auc"].iloc[0] < 0.1
    assert ("gan", 95, "test") in calls and ("gan", 95, "train") not in calls
    rows = crossdataset.probe_rows(routed["gan"], "demo", "gan")
    assert list(rows.columns) == crossdataset.MATRIX_COLUMNS and rows["model"].iloc[0] == "b/none/linear_probe/none"


def test_detector_rows_use_the_validation_threshold():
    """Balanced ACC of a detector uses the threshold its own validation split gives, on both datasets."""

    def part(split, scores, labels, q=95):
        return pd.DataFrame(
            {
                "split": split,
                "test_quality": q,
                "train_quality": 95,
                "label": labels,
                "score": scores,
                "video_key": [f"{split}{i}" for i in range(len(labels))],
            }
        )

    own = pd.concat(
        [part("val", [0.7, 0.8, 0.9, 0.95], [0, 0, 1, 1]), part("test", [0.6, 0.75, 0.92, 0.99], [0, 0, 1, 1])]
    )
    # at 0.5 these would be perfect; below the val threshold (~0.85) all are called real: balanced ACC 0.5, AUC 1
    cross = part("test", [0.3, 0.4, 0.7, 0.8], [0, 0, 1, 1]).drop(columns="split")
    rows = pd.DataFrame(crossdataset.detector_rows(own, cross, "demo", "gan", "m@q95"))
    assert list(rows["test_dataset"]) == ["demo", "gan"]
    assert rows["auc"].tolist() == [1.0, 1.0] and rows["bacc"].tolist() == [1.0, 0.5]
