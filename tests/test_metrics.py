"""Metrics: known-answer values, bootstrap CIs (videos, identity clusters), video keying by method/quality/id, val-chosen thresholds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from dfpipe.evaluation.metrics import (
    EVAL_COLUMNS,
    FAKE_METHODS,
    PRED_COLUMNS,
    TEST_SETS,
    binary_metrics,
    bootstrap_auc_ci,
    bootstrap_counts,
    check_predictions,
    choose_threshold,
    identity_keys,
    metric_table,
    video_scores,
    video_weights,
    weighted_aucs,
)

# Per detector: how far apart fake and real scores sit at quality 95; compression shrinks the gap.
SEPARATION = {"effb4": 2.5, "meso4": 1.0}


def make_predictions(
    split: str,
    detectors=("effb4", "meso4"),
    train_qualities=(95, 60),
    test_qualities=(95, 60),
    train_methods=("all",),
    n_videos: int = 6,
    n_frames: int = 4,
    seed: int = 0,
) -> pd.DataFrame:
    """Synthetic prediction table: FF++-style ids (originals "00i", fakes "00i_00j" shared by all methods),
    a per-video offset so frames of a video are correlated, and separation falling with test quality."""
    rng = np.random.default_rng(seed)
    rows = []
    for det in detectors:
        for tq in train_qualities:
            for tm in train_methods:
                for q in test_qualities:
                    gap = SEPARATION[det] * q / 95
                    for method in ("original", *FAKE_METHODS):
                        label = int(method != "original")
                        for v in range(n_videos):
                            vid = f"{v:03d}" if method == "original" else f"{v:03d}_{(v + 1) % n_videos:03d}"
                            offset = rng.normal(0, 0.5)
                            for f in range(n_frames):
                                logit = gap * (label - 0.5) + offset + rng.normal(0, 1)
                                rows.append(
                                    (
                                        det,
                                        tq,
                                        tm,
                                        q,
                                        split,
                                        method,
                                        vid,
                                        f"{method}/q{q}/{vid}",
                                        8 * f,
                                        label,
                                        float(1 / (1 + np.exp(-logit))),
                                    )
                                )
    return pd.DataFrame(rows, columns=PRED_COLUMNS)


def test_perfect_and_reversed_separation() -> None:
    labels = np.array([0, 0, 0, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.8, 0.9])
    perfect = binary_metrics(labels, scores)
    assert perfect["auc"] == 1.0 and perfect["eer"] == 0.0 and perfect["ap"] == 1.0
    assert perfect["acc_05"] == 1.0 and perfect["f1_05"] == 1.0 and not perfect["single_class"]
    assert (perfect["n"], perfect["n_pos"], perfect["n_neg"]) == (5, 2, 3)
    reversed_ = binary_metrics(labels, 1 - scores)
    assert reversed_["auc"] == 0.0 and reversed_["eer"] == 1.0 and reversed_["acc_05"] == 0.0


def test_hand_computed_case() -> None:
    # Ranked: 0.8 fake, 0.6 real, 0.4 fake, 0.1 real. Pairs won by fakes: 3 of 4.
    # AP = 1/2 · 1 + 1/2 · 2/3. At 0.5: TP 1 (0.8), FP 1 (0.6), FN 1 (0.4), TN 1 → acc 1/2, F1 2/(2+1+1).
    # ROC (FPR, TPR): (0,0) (0,.5) (.5,.5) (.5,1) (1,1): FNR = FPR = 0.5 at (.5,.5).
    m = binary_metrics(np.array([0, 0, 1, 1]), np.array([0.1, 0.6, 0.4, 0.8]))
    assert m["auc"] == pytest.approx(0.75)
    assert m["ap"] == pytest.approx(5 / 6)
    assert m["acc_05"] == pytest.approx(0.5) and m["f1_05"] == pytest.approx(0.5)
    assert m["eer"] == pytest.approx(0.5)
    assert np.isnan(m["acc_val"]) and np.isnan(m["threshold_val"])


def test_eer_interpolates_between_roc_points() -> None:
    # Reals 0.1 0.3 0.7, fakes 0.5 0.9: FNR falls from 1/2 to 0 while FPR stays 1/3, so they meet at 1/3.
    m = binary_metrics(np.array([0, 0, 0, 1, 1]), np.array([0.1, 0.3, 0.7, 0.5, 0.9]))
    assert m["eer"] == pytest.approx(1 / 3) and m["auc"] == pytest.approx(5 / 6)
    # All scores tied: the ROC is the diagonal, which crosses FNR = FPR at 0.5.
    assert binary_metrics(np.array([0, 1]), np.array([0.5, 0.5]))["eer"] == pytest.approx(0.5)


def test_single_class_is_flagged_not_a_crash() -> None:
    m = binary_metrics(np.array([1, 1, 1]), np.array([0.9, 0.4, 0.7]))
    assert m["single_class"] and np.isnan(m["auc"]) and np.isnan(m["ap"]) and np.isnan(m["eer"])
    assert m["acc_05"] == pytest.approx(2 / 3)
    assert np.isnan(bootstrap_auc_ci(np.array([1, 1]), np.array([0.2, 0.3]), n=10)).all()
    with pytest.raises(ValueError, match="one class"):
        choose_threshold(np.array([0, 0]), np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="non-empty"):
        binary_metrics(np.array([]), np.array([]))


def test_threshold_chosen_on_val_applies_to_test() -> None:
    # Val: every cut in (0.2, 0.3] separates perfectly; the midpoint 0.25 leaves the most margin.
    threshold = choose_threshold(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.3, 0.4]))
    assert threshold == pytest.approx(0.25)
    # Test scores are shifted down (an uncalibrated detector): 0.5 calls everything real, the val cut does not.
    m = binary_metrics(np.array([0, 0, 1, 1]), np.array([0.15, 0.22, 0.28, 0.45]), threshold)
    assert m["acc_05"] == 0.5 and m["acc_val"] == 1.0 and m["threshold_val"] == pytest.approx(0.25)


def test_bootstrap_ci_contains_estimate_and_narrows() -> None:
    rng = np.random.default_rng(1)

    def sample(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.repeat([0, 1], n)
        return labels, labels * 1.0 + rng.normal(0, 1.0, 2 * n)

    small, large = sample(30), sample(1500)
    widths = []
    for labels, scores in (small, large):
        lo, hi = bootstrap_auc_ci(labels, scores, n=100, seed=0)
        assert lo < binary_metrics(labels, scores)["auc"] < hi
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 3
    assert bootstrap_auc_ci(*small, n=100, seed=0) == bootstrap_auc_ci(*small, n=100, seed=0)


def test_weighted_aucs_equal_roc_auc_score_row_by_row() -> None:
    rng = np.random.default_rng(3)
    for n in (2, 9, 400):
        labels = np.r_[0, 1, rng.integers(0, 2, n - 2)]
        scores = np.round(rng.normal(size=n) + labels, 1)  # rounded: many ties, counted half
        weights = rng.integers(0, 4, (25, n)).astype(float)
        weights[:, :2] += 1  # both classes present in every row
        expected = [roc_auc_score(labels, scores, sample_weight=w) for w in weights]
        np.testing.assert_allclose(weighted_aucs(labels, scores, weights), expected, rtol=0, atol=1e-12)


def test_bootstrap_by_video_is_wider_for_correlated_frames() -> None:
    # 20 videos per class, 25 near-identical frames each: there is the information of 40 samples, not 1000.
    rng = np.random.default_rng(2)
    video_labels = np.repeat([0, 1], 20)
    video_scores_ = video_labels * 0.8 + rng.normal(0, 1, 40)
    labels = np.repeat(video_labels, 25)
    scores = np.repeat(video_scores_, 25) + rng.normal(0, 0.05, 1000)
    groups = np.repeat([f"v{i}" for i in range(40)], 25)
    lo_f, hi_f = bootstrap_auc_ci(labels, scores, n=100)
    lo_v, hi_v = bootstrap_auc_ci(labels, scores, n=100, groups=groups)
    assert hi_v - lo_v > 3 * (hi_f - lo_f)
    with pytest.raises(ValueError, match="both labels"):
        bootstrap_auc_ci(np.array([0, 1, 0, 1]), np.array([0.1, 0.9, 0.2, 0.8]), groups=np.array(["a", "a", "b", "b"]))


def _identity_table(seed: int = 0, n_ids: int = 40) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Video keys, labels and scores of FF++-named videos: each target's original and its four fakes `TTT_SSS`,
    the fakes sharing a strong per-target offset (a target hard to fake well makes all its fakes easy)."""
    rng = np.random.default_rng(seed)
    keys, labels, scores = [], [], []
    for i in range(n_ids):
        target, source = f"{i:03d}", f"{(i + 1) % n_ids:03d}"
        keys.append(f"original/q95/{target}")
        labels.append(0)
        scores.append(rng.normal())
        offset = rng.normal(0, 2)
        for method in FAKE_METHODS:
            keys.append(f"{method}/q95/{target}_{source}")
            labels.append(1)
            scores.append(1 + offset + rng.normal(0, 0.1))
    return np.array(keys), np.array(labels), np.array(scores)


def test_identity_keys_are_each_videos_target() -> None:
    keys = ["original/q95/007", "Deepfakes/q95/007_012", "NeuralTextures/q60/012_007", "original/q60/012"]
    assert list(identity_keys(keys)) == ["007", "007", "012", "012"]
    assert list(identity_keys(pd.Series(keys[:2]))) == ["007", "007"]
    # Names outside FF++'s scheme stay one cluster per video: "_" in a file name is no identity pair.
    others = ["real/q95/img_01_3f2a9c1b", "fake_sd/q95/img_01_3f2a9c1b", "DeepFakeDetection/q95/01_02__hugging__A1"]
    assert list(identity_keys(others)) == others


def test_identity_bootstrap_draws_whole_identities_with_both_classes() -> None:
    keys, labels, _ = _identity_table()
    counts, codes = bootstrap_counts(labels, identity_keys(keys), n=300, seed=0, stratify=False)
    weight = counts[:, codes]  # each video's multiplicity in each replicate
    assert counts.shape == (300, 40) and (counts.sum(1) == 40).all()  # 40 identities drawn with replacement
    for i in range(0, len(keys), 5):  # an original and its four fakes are drawn together, every time
        assert (weight[:, i : i + 5] == weight[:, i : i + 1]).all()
    assert ((weight * labels).sum(1) > 0).all() and ((weight * (1 - labels)).sum(1) > 0).all()
    # Resampling videos within each class draws an original and its fakes independently.
    video_counts, video_codes = bootstrap_counts(labels, keys, n=300, seed=0)
    video_weight = video_counts[:, video_codes]
    assert (video_weight[:, 1] != video_weight[:, 0]).any()
    # Two one-class clusters: half the draws lack a class; they are redrawn, so every replicate has both.
    counts, _ = bootstrap_counts(np.array([0, 1]), np.array(["a", "b"]), n=50, seed=0, stratify=False)
    assert (counts == 1).all()
    pair = bootstrap_auc_ci(np.array([0, 1]), np.array([0.2, 0.7]), n=50, groups=np.array(["a", "b"]), stratify=False)
    assert pair == (1.0, 1.0)


def test_identity_interval_is_wider_than_the_video_interval() -> None:
    """The four fakes of a target share its offset: resampling them as independent videos hides that variance."""
    keys, labels, scores = _identity_table()
    lo_v, hi_v = bootstrap_auc_ci(labels, scores, n=400, groups=keys)
    lo_i, hi_i = bootstrap_auc_ci(labels, scores, n=400, groups=identity_keys(keys), stratify=False)
    assert hi_i - lo_i > 1.25 * (hi_v - lo_v)
    assert lo_i < roc_auc_score(labels, scores) < hi_i


def test_groups_with_both_classes_are_resampled_as_clusters() -> None:
    labels, scores = np.array([0, 1, 0, 1, 0, 1]), np.array([0.1, 0.9, 0.2, 0.4, 0.5, 0.8])
    groups = np.array(["a", "a", "b", "b", "c", "c"])
    lo, hi = bootstrap_auc_ci(labels, scores, n=200, groups=groups, stratify=False)
    assert 0 <= lo <= hi <= 1 and lo < hi
    with pytest.raises(ValueError, match="stratify=False"):  # stratified draws need groups of one class
        bootstrap_auc_ci(labels, scores, groups=groups)
    assert np.isnan(bootstrap_auc_ci(np.zeros(6), scores, groups=groups, stratify=False)).all()


def test_evaluate_intervals_resample_identities(evaluated) -> None:
    """Catches the main metrics going back to resampling videos: their interval is that of identity clusters,
    with the frames' 1/frames weights, and differs from the video-resampling one."""
    test, _, result = evaluated
    run = test[
        (test["detector"] == "meso4")
        & (test["train_quality"] == 95)
        & (test["train_methods"] == "all")
        & (test["test_quality"] == 60)
    ]
    row = result.set_index(["detector", "train_quality", "train_methods", "test_quality", "test_set", "level"])
    got = row.loc[("meso4", 95, "all", 60, "all", "frame"), ["auc_lo", "auc_hi"]].astype(float).to_numpy()
    labels, scores, keys = run["label"].to_numpy(), run["score"].to_numpy(), run["video_key"].to_numpy()
    w = video_weights(keys)
    expected = bootstrap_auc_ci(labels, scores, n=5, groups=identity_keys(keys), weights=w, stratify=False)
    np.testing.assert_allclose(got, expected)
    assert not np.allclose(got, bootstrap_auc_ci(labels, scores, n=5, groups=keys, weights=w))


def test_video_keying_keeps_methods_apart() -> None:
    rows = [
        ("Deepfakes", "000_003", 0.9),
        ("Deepfakes", "000_003", 0.7),
        ("Face2Face", "000_003", 0.2),
        ("Face2Face", "000_003", 0.4),
        ("original", "000", 0.1),
    ]
    pred = pd.DataFrame(
        [
            {"method": m, "video_id": v, "video_key": f"{m}/q77/{v}", "label": int(m != "original"), "score": s}
            for m, v, s in rows
        ]
    )
    videos = video_scores(pred).set_index("video_key")
    assert len(videos) == 3
    assert videos.loc["Deepfakes/q77/000_003", "score"] == pytest.approx(0.8)
    assert videos.loc["Face2Face/q77/000_003", "score"] == pytest.approx(0.3)
    assert videos.loc["Face2Face/q77/000_003", "n_frames"] == 2
    bad = pred.assign(label=[1, 0, 1, 1, 0])
    with pytest.raises(ValueError, match="Deepfakes/q77/000_003"):
        video_scores(bad)


def test_check_predictions_names_the_file_and_problem() -> None:
    pred = make_predictions("test", detectors=("meso4",), train_qualities=(95,), test_qualities=(95,), n_videos=2)
    with pytest.raises(ValueError, match=r"preds/meso4\.parquet: video_key"):
        check_predictions(pred.assign(video_key=pred["video_id"]), "preds/meso4.parquet")
    with pytest.raises(ValueError, match=r"x\.parquet: expected only split 'val'"):
        check_predictions(pred, "x.parquet", split="val")
    with pytest.raises(ValueError, match=r"x\.parquet: prediction table lacks columns \['score'\]"):
        check_predictions(pred.drop(columns="score"), "x.parquet")


@pytest.fixture(scope="module")
def evaluated() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    def both(split: str, seed: int) -> pd.DataFrame:
        # Every detector trained on all methods at two qualities; effb4 also on Deepfakes alone at q60.
        return pd.concat(
            [
                make_predictions(split, seed=seed),
                make_predictions(
                    split, detectors=("effb4",), train_qualities=(60,), train_methods=("Deepfakes",), seed=seed + 10
                ),
            ],
            ignore_index=True,
        )

    test, val = both("test", 0), both("val", 1)
    return test, val, metric_table(test, val, n_boot=5)


def test_evaluate_rows_and_values(evaluated) -> None:
    test, _, result = evaluated
    assert list(result.columns) == EVAL_COLUMNS
    # (2 detectors × 2 train qualities + 1 Deepfakes-only run) × 2 test qualities, 5 test sets, 2 levels.
    assert len(result) == 10 * 5 * 2
    assert set(result["test_set"]) == set(TEST_SETS)
    row = result.set_index(["detector", "train_quality", "train_methods", "test_quality", "test_set", "level"])
    run = test[
        (test["detector"] == "meso4")
        & (test["train_quality"] == 95)
        & (test["train_methods"] == "all")
        & (test["test_quality"] == 60)
        & test["method"].isin(["original", "Face2Face"])
    ]
    frame = row.loc[("meso4", 95, "all", 60, "FF-F2F", "frame")]
    assert frame["auc"] == pytest.approx(binary_metrics(run["label"], run["score"])["auc"])
    assert (frame["n"], frame["n_pos"], frame["n_neg"]) == (48, 24, 24)
    assert frame["auc_lo"] <= frame["auc"] <= frame["auc_hi"]
    videos = run.groupby("video_key").agg(label=("label", "first"), score=("score", "mean"))
    video = row.loc[("meso4", 95, "all", 60, "FF-F2F", "video")]
    assert video["n"] == 12 and video["auc"] == pytest.approx(binary_metrics(videos["label"], videos["score"])["auc"])
    all_set = row.loc[("meso4", 95, "all", 60, "all", "video")]
    assert (all_set["n_pos"], all_set["n_neg"]) == (24, 6)


def test_evaluate_threshold_comes_from_val_in_training_condition(evaluated) -> None:
    _, val, result = evaluated
    # effb4 trained on Deepfakes at q60: threshold from val at q60, originals + Deepfakes only, frame level.
    v = val[
        (val["detector"] == "effb4")
        & (val["train_quality"] == 60)
        & (val["train_methods"] == "Deepfakes")
        & (val["test_quality"] == 60)
        & val["method"].isin(["original", "Deepfakes"])
    ]
    expected = choose_threshold(v["label"].to_numpy(), v["score"].to_numpy())
    rows = result[
        (result["detector"] == "effb4")
        & (result["train_quality"] == 60)
        & (result["train_methods"] == "Deepfakes")
        & (result["level"] == "frame")
    ]
    assert (rows["threshold_val"] == expected).all()  # the same cut at every test quality and test set
    assert rows["acc_val"].notna().all()


def test_evaluate_needs_val_at_training_quality() -> None:
    test = make_predictions("test", detectors=("meso4",), train_qualities=(95,), test_qualities=(95,), n_videos=2)
    val = make_predictions("val", detectors=("meso4",), train_qualities=(95,), test_qualities=(60,), n_videos=2)
    with pytest.raises(ValueError, match="no validation predictions at test_quality 95 for meso4"):
        metric_table(test, val, n_boot=0)
    val_ok = make_predictions("val", detectors=("meso4",), train_qualities=(95,), test_qualities=(95,), n_videos=2)
    assert metric_table(test, val_ok, n_boot=0)["auc_lo"].isna().all()


def _double_frames(pred: pd.DataFrame, method: str) -> pd.DataFrame:
    """Every frame of `method` twice (the second copy at new frame indices): the augmented frame rate."""
    extra = pred[pred["method"] == method].assign(frame_index=lambda d: d["frame_index"] + 1)
    return pd.concat([pred, extra], ignore_index=True)


def test_pooled_frame_metrics_do_not_depend_on_per_method_frame_counts() -> None:
    """NeuralTextures at twice the frame rate in val and test: every frame-level figure (pooled "all" set
    included, threshold and bootstrap interval too) stays what it is with equal frame counts."""
    test = make_predictions("test", detectors=("meso4",), train_qualities=(95,), test_qualities=(95, 60), seed=4)
    val = make_predictions("val", detectors=("meso4",), train_qualities=(95,), test_qualities=(95,), seed=5)
    # Make NeuralTextures easy so that over-weighting it would move the pooled figures.
    easy = test["method"] == "NeuralTextures"
    test.loc[easy, "score"] = 0.5 + test.loc[easy, "score"] / 2
    base = metric_table(test, val, n_boot=30)
    doubled = metric_table(_double_frames(test, "NeuralTextures"), _double_frames(val, "NeuralTextures"), n_boot=30)
    frame = (base["level"] == "frame").to_numpy()
    assert (
        doubled.loc[frame & (base["test_set"] == "FF-NT").to_numpy(), "n"].to_numpy()
        == 1.5 * base.loc[frame & (base["test_set"] == "FF-NT").to_numpy(), "n"].to_numpy()
    ).all()
    values = [
        "auc",
        "auc_lo",
        "auc_hi",
        "ap",
        "eer",
        "acc_05",
        "bacc_05",
        "f1_05",
        "threshold_val",
        "acc_val",
        "bacc_val",
    ]
    pd.testing.assert_frame_equal(doubled[values], base[values], check_exact=False, rtol=0, atol=1e-9)


def test_video_weights_make_each_video_weigh_one() -> None:
    from dfpipe.evaluation.metrics import video_weights

    np.testing.assert_allclose(video_weights(np.array(["a", "b", "a", "c", "a"])), [1 / 3, 1, 1 / 3, 1, 1 / 3])


def test_always_fake_scorer_has_balanced_accuracy_one_half() -> None:
    # 4 fakes per real, as in FF++: plain accuracy and F1 reward answering "fake" every time.
    labels = np.array([0, 1, 1, 1, 1] * 3)
    m = binary_metrics(labels, np.full(labels.size, 0.9), threshold_val=0.3)
    assert m["acc_05"] == pytest.approx(0.8) and m["f1_05"] == pytest.approx(8 / 9)
    assert m["bacc_05"] == pytest.approx(0.5) and m["bacc_val"] == pytest.approx(0.5)
    # Balanced accuracy is the mean recall of the two classes.
    m = binary_metrics(np.array([0, 0, 1, 1, 1, 1]), np.array([0.1, 0.7, 0.8, 0.9, 0.2, 0.6]))
    assert m["bacc_05"] == pytest.approx((1 / 2 + 3 / 4) / 2)
    assert binary_metrics(np.array([1, 1]), np.array([0.9, 0.1]))["bacc_05"] == pytest.approx(0.5)


def test_balanced_accuracy_is_in_every_evaluated_row(evaluated) -> None:
    _, _, result = evaluated
    assert {"bacc_05", "bacc_val"} <= set(result.columns)
    assert result["bacc_05"].between(0, 1).all() and result["bacc_val"].between(0, 1).all()


def meso4_q95_row(split: str, method: str, vid: str, frame: int, score: float) -> tuple:
    """One PRED_COLUMNS row of meso4 trained on all methods at q95 and tested at q95."""
    return ("meso4", 95, "all", 95, split, method, vid, f"{method}/q95/{vid}", frame, int(method != "original"), score)


def _uneven_videos(split: str, seed: int) -> pd.DataFrame:
    """meso4 at q95: 6 originals and 6 Deepfakes videos of 1 to 10 frames, every frame scoring its video's score,
    rows sorted by video_key (as video_scores orders videos)."""
    rng = np.random.default_rng(seed)
    rows = []
    for method in ("original", "Deepfakes"):
        for v in range(6):
            vid = f"{v:03d}" if method == "original" else f"{v:03d}_{v + 1:03d}"
            score = float(rng.uniform(0.2, 0.8) + 0.15 * (method != "original"))
            rows += [meso4_q95_row(split, method, vid, f, score) for f in range(1 + 9 * (v % 2) + v // 2)]
    return pd.DataFrame(rows, columns=PRED_COLUMNS).sort_values(["video_key", "frame_index"], ignore_index=True)


def test_frame_level_weighs_and_resamples_whole_videos() -> None:
    """Catches frame weights or bootstrap groups dropped from the frame-level metrics: with constant scores per
    video, a 10-frame video weighs as a 1-frame one, so the frame row equals the video row, interval included."""
    result = metric_table(_uneven_videos("test", 0), _uneven_videos("val", 1), n_boot=200)
    result = result[result["test_set"] == "all"].set_index("level")
    values = ["auc", "auc_lo", "auc_hi", "ap", "eer", "acc_05", "bacc_05", "f1_05", "threshold_val", "bacc_val"]
    assert result.loc["frame", "n"] > result.loc["video", "n"] == 12
    np.testing.assert_allclose(result.loc["frame", values].astype(float), result.loc["video", values].astype(float))


def test_bootstrap_resamples_groups_with_their_weights() -> None:
    """Catches bootstrap_auc_ci ignoring `groups` or `weights`: frames of constant-score videos, grouped and
    weighted 1/frames, give the interval of the videos themselves, and frames as units give another."""
    test = _uneven_videos("test", 2)
    keys = test["video_key"].to_numpy()
    videos = video_scores(test)
    labels, scores = test["label"].to_numpy(), test["score"].to_numpy()
    expected = bootstrap_auc_ci(videos["label"].to_numpy(), videos["score"].to_numpy(), n=200)
    grouped = bootstrap_auc_ci(labels, scores, n=200, groups=keys, weights=video_weights(keys))
    np.testing.assert_allclose(grouped, expected)
    assert not np.allclose(bootstrap_auc_ci(labels, scores, n=200, weights=video_weights(keys)), expected)
    assert not np.allclose(bootstrap_auc_ci(labels, scores, n=200, groups=keys), expected)
    w = video_weights(keys)  # and the point estimate: the weighted AUC is the videos' AUC
    assert weighted_aucs(labels, scores, w[None])[0] == pytest.approx(roc_auc_score(videos["label"], videos["score"]))
    assert roc_auc_score(labels, scores) != pytest.approx(roc_auc_score(videos["label"], videos["score"]))
