"""Regression tests of the study's design: what reaches the shards, and what the evaluation's intervals resample.

Each test fails under a one-line break of the code it guards: a fake whose identities sit in two splits must
not be put in either; a video listed in no split stays in the manifest but out of every shard; `evaluate`
resamples whole videos for its bootstrap AUC intervals, not frames.
"""

from __future__ import annotations

import json
import shutil
import tarfile

import numpy as np
import pandas as pd
import pytest
from test_metrics import meso4_q95_row

from dfpipe.data import manifest
from dfpipe.data.layout import SPLITS, video_dir
from dfpipe.data.shards import write_split
from dfpipe.evaluation.metrics import PRED_COLUMNS, bootstrap_auc_ci, identity_keys, metric_table, video_weights

CROSS_SPLIT = "Deepfakes/000_002"  # 000 is a train identity, 002 a val identity
UNLISTED = ("original/006", "Deepfakes/006_000")  # 006 is in no split file


@pytest.fixture(scope="module")
def study(tmp_path_factory, ffpp_tree) -> tuple[pd.DataFrame, dict[str, set[str]]]:
    """The conftest tree (pairs 000/001 train, 002/003 val, 004/005 test) plus a cross-split fake and an
    unlisted identity; its manifest, and the video keys each split's shards end up holding."""
    root = tmp_path_factory.mktemp("study") / "ffpp"
    shutil.copytree(ffpp_tree, root)
    fakes, originals = root / video_dir("Deepfakes", "c23"), root / video_dir("original", "c23")
    shutil.copy(fakes / "000_001.mp4", fakes / "000_002.mp4")
    shutil.copy(originals / "000.mp4", originals / "006.mp4")
    shutil.copy(fakes / "000_001.mp4", fakes / "006_000.mp4")
    table = manifest.build(root, root / "splits", ["Deepfakes"], "c23", 50)
    # What faces and compress carry into the JPEG tables: the manifest's split, per frame.
    frames = pd.DataFrame(
        {
            "key": table["key"],
            "method": table["method"],
            "video_id": table["video_id"],
            "split": table["split"],
            "label": table["label"],
            "frame_index": 0,
            "quality": 77,
            "jpeg": [b"\xff\xd8 not decoded here \xff\xd9"] * len(table),
        }
    )
    in_shards = {}
    for split in SPLITS:
        out = root.parent / "shards" / "q77"
        write_split([frames], 77, split, 2, out)
        keys = set()
        for tar in sorted(out.glob(f"{split}-*.tar")):
            with tarfile.open(tar) as tf:
                for member in tf.getmembers():
                    if member.name.endswith(".json"):
                        meta = json.loads(tf.extractfile(member).read())
                        keys.add(f"{meta['method']}/{meta['video_id']}")
        in_shards[split] = keys
    return table, in_shards


def test_fake_across_two_splits_is_left_out(study) -> None:
    table, in_shards = study
    split = table.set_index("key")["split"]
    assert pd.isna(split[CROSS_SPLIT]), f"{CROSS_SPLIT} mixes a train and a val identity, got {split[CROSS_SPLIT]}"
    assert not any(CROSS_SPLIT in keys for keys in in_shards.values())
    # Its single-split neighbours do get in (the test would pass vacuously otherwise).
    assert "Deepfakes/000_001" in in_shards["train"] and "Deepfakes/002_003" in in_shards["val"]


def test_video_in_no_split_stays_in_the_manifest_but_out_of_the_shards(study) -> None:
    table, in_shards = study
    assert set(UNLISTED) <= set(table["key"])  # listed, with its probe, for the summary
    assert table.set_index("key")["split"][list(UNLISTED)].isna().all()
    everywhere = set().union(*in_shards.values())
    assert not everywhere & set(UNLISTED)
    # Every video with a split is in its own split's shards, and nowhere else.
    for split in SPLITS:
        assert in_shards[split] == set(table.loc[table["split"] == split, "key"])


def correlated_predictions(split: str, n_videos: int = 12, n_frames: int = 30, seed: int = 0) -> pd.DataFrame:
    """Frames of a video almost repeat its score: the test set holds n_videos of information, not n_frames×."""
    rng = np.random.default_rng(seed)
    rows = []
    for method in ("original", "Deepfakes"):
        label = int(method != "original")
        for v in range(n_videos):
            vid = f"{v:03d}" if label == 0 else f"{v:03d}_{(v + 1) % n_videos:03d}"
            level = 0.8 * label + rng.normal(0, 1)
            for f in range(n_frames):
                score = float(1 / (1 + np.exp(-(level + rng.normal(0, 0.05)))))
                rows.append(meso4_q95_row(split, method, vid, f, score))
    return pd.DataFrame(rows, columns=PRED_COLUMNS)


def test_evaluate_bootstrap_resamples_identities_not_frames() -> None:
    test, val = correlated_predictions("test"), correlated_predictions("val", seed=1)
    row = metric_table(test, val, n_boot=200, seed=3).query("test_set == 'FF-DF' and level == 'frame'").iloc[0]
    labels, scores, keys = test["label"].to_numpy(), test["score"].to_numpy(), test["video_key"].to_numpy()
    weights = video_weights(keys)
    by_identity = bootstrap_auc_ci(
        labels, scores, n=200, seed=3, groups=identity_keys(keys), weights=weights, stratify=False
    )
    by_video = bootstrap_auc_ci(labels, scores, n=200, seed=3, groups=keys, weights=weights)
    by_frame = bootstrap_auc_ci(labels, scores, n=200, seed=3, weights=weights)
    assert (row["auc_lo"], row["auc_hi"]) == pytest.approx(by_identity, abs=1e-12)
    assert by_identity != pytest.approx(by_video, abs=1e-3)  # a fake and its target's original are one sample
    # Resampling frames would pretend to 720 independent samples: an interval several times too narrow.
    assert row["auc_hi"] - row["auc_lo"] > 3 * (by_frame[1] - by_frame[0])
