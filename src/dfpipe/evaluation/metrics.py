"""Detection metrics from prediction tables: frame and video level, per FF++ test set, with bootstrap CIs.

A prediction table has one row per scored frame (`PRED_COLUMNS`). Videos are keyed by `video_key`
("method/q{q}/video_id"), never by folder name or bare id, so `000_003` of Deepfakes and of Face2Face stay
two videos (DeepfakeBench merges them). Accuracy is reported at 0.5 and at a threshold chosen on
validation predictions, never at a threshold tuned on the test set itself (UnivFD's point about oracle
accuracy), and balanced accuracy (mean of TPR and TNR) beside each: with 4 fakes per original, always
answering "fake" scores 0.8 accuracy but 0.5 balanced accuracy.

Frame-level metrics weigh every video equally: each frame has sample weight 1 / (frames of its video). Frame
counts per video differ by design (NeuralTextures is extracted at twice the frame rate, the "augmented fps",
and that setting reaches val and test too) and by accident (faces not found, short videos). Unweighted, the
pooled "all" set would give NeuralTextures 2/5 of the fake weight instead of 1/4, and a 5:1 instead of 4:1
fake:real ratio to ACC/F1/AP. The weighting is done here rather than by extracting fewer frames for val/test
because it makes every metric independent of any per-video frame count, keeps the extra frames (each video's
mean is less noisy) and leaves one extraction setting per method. With it, the frame and video levels score the
same population of videos (FF++: 4 fakes per original, as the literature's ACC/AP/F1 assume); balanced
accuracy removes that prevalence too. AUC and EER do not depend on the class ratio.

The AUC's 95% interval resamples target identities, not videos (`identity_keys`, `bootstrap_auc_ci` with
stratify=False). A fake `TTT_SSS` is made from the original video `TTT`: it shares that video's person,
background, lighting and pose, and every manipulation method made its own fake of it, so the videos of one
target are not independent samples. Resampling them one by one treats 4 correlated fakes of a target as 4
independent ones and gives too narrow an interval; drawing whole identities (original and fakes together)
keeps that dependence in every replicate.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    f1_score,
    roc_auc_score,
    roc_curve,
)

PRED_COLUMNS = [
    "detector",
    "train_quality",
    "train_methods",
    "test_quality",
    "split",
    "method",
    "video_id",
    "video_key",
    "frame_index",
    "label",
    "score",
]
RUN_KEYS = ["detector", "train_quality", "train_methods", "test_quality"]
FAKE_METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures")
METHODS = ("original", *FAKE_METHODS)
# FF++ test sets as the literature names them: one manipulation against the originals, and everything.
TEST_SETS: dict[str, tuple[str, ...]] = {
    "FF-DF": ("original", "Deepfakes"),
    "FF-F2F": ("original", "Face2Face"),
    "FF-FS": ("original", "FaceSwap"),
    "FF-NT": ("original", "NeuralTextures"),
    "all": METHODS,
}
LEVELS = ("frame", "video")
METRIC_COLUMNS = [
    "n",
    "n_pos",
    "n_neg",
    "single_class",
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
EVAL_COLUMNS = [*RUN_KEYS, "test_set", "level", *METRIC_COLUMNS]


def check_predictions(pred: pd.DataFrame, name: str, split: str | None = None) -> pd.DataFrame:
    """Raise ValueError (naming `name`, e.g. the parquet file) unless `pred` is a valid prediction table."""
    missing = [c for c in PRED_COLUMNS if c not in pred.columns]
    if missing:
        raise ValueError(f"{name}: prediction table lacks columns {missing}; expected {PRED_COLUMNS}")
    if pred.empty:
        raise ValueError(f"{name}: prediction table has no rows")
    if split is not None and not (pred["split"] == split).all():
        others = sorted(set(pred["split"]) - {split})
        raise ValueError(f"{name}: expected only split {split!r}, found {others}")
    bad_methods = sorted(set(pred["method"]) - set(METHODS))
    if bad_methods:
        raise ValueError(f"{name}: unknown methods {bad_methods}; allowed: {list(METHODS)}")
    if not pred["label"].isin([0, 1]).all():
        raise ValueError(f"{name}: label must be 0 (real) or 1 (fake)")
    if not np.isfinite(pred["score"].to_numpy(dtype=float)).all():
        raise ValueError(f"{name}: score has NaN or infinite values")
    expected_key = (
        pred["method"].astype(str) + "/q" + pred["test_quality"].astype(str) + "/" + pred["video_id"].astype(str)
    )
    wrong = pred.loc[pred["video_key"] != expected_key, "video_key"]
    if not wrong.empty:
        raise ValueError(
            f"{name}: video_key must be method/q{{test_quality}}/video_id; "
            f"e.g. {wrong.iloc[0]!r} does not match its row"
        )
    return pred


def read_predictions(
    paths: Iterable[str | os.PathLike], split: str | None = None, extra: Sequence[str] = ()
) -> pd.DataFrame:
    """Concatenate prediction parquet files, each checked (errors name the file), in the given order; columns
    `PRED_COLUMNS` plus those of `extra` a file has (e.g. t-SNE "features")."""
    tables = []
    for path in paths:
        try:
            table = pd.read_parquet(path)
        except (OSError, ValueError) as exc:  # pyarrow's errors derive from these; they do not name the file
            raise ValueError(
                f"{path}: not a readable prediction table ({exc}); delete it and rerun the workflow to predict again"
            ) from exc
        check_predictions(table, str(path), split)
        tables.append(table[PRED_COLUMNS + [c for c in extra if c in table.columns]])
    if not tables:
        raise ValueError("read_predictions: no prediction files given")
    return pd.concat(tables, ignore_index=True)


def video_scores(pred: pd.DataFrame) -> pd.DataFrame:
    """Mean frame score per video, keyed by video_key (method/quality/id) within each run present in `pred`.

    Columns: the run keys and split present in `pred`, video_key, method, video_id, label, score, n_frames.
    """
    keys = [c for c in (*RUN_KEYS, "split") if c in pred.columns] + ["video_key"]
    grouped = pred.groupby(keys, sort=True)
    mixed = grouped["label"].nunique()
    if (mixed > 1).any():
        examples = mixed[mixed > 1].reset_index()["video_key"].head(5).tolist()
        raise ValueError(f"video_scores: frames of one video carry both labels: {examples}")
    out = grouped.agg(
        method=("method", "first"),
        video_id=("video_id", "first"),
        label=("label", "first"),
        score=("score", "mean"),
        n_frames=("score", "size"),
    ).reset_index()
    return out


def video_weights(video_keys: np.ndarray) -> np.ndarray:
    """Sample weight of each frame: 1 / (frames of its video among `video_keys`), so every video weighs 1."""
    codes, _ = pd.factorize(pd.Series(video_keys))
    return 1.0 / np.bincount(codes)[codes]


def identity_keys(video_keys: Iterable[str]) -> np.ndarray:
    """Target identity of each video, from its `video_key` ("method/q{q}/video_id"): the original's id, and for
    a fake `TTT_SSS` its target `TTT`, the original whose video the fake was made from.

    The method and quality are dropped, so an original and all its fakes, at any quality, form one cluster for
    `bootstrap_auc_ci`. The source `SSS` lends only a face (Deepfakes, FaceSwap) or expressions (Face2Face,
    NeuralTextures); the fake's frames are the target's. Only FF++ names (digits, or digits_digits) are read
    so: any other id (an image file's, a DeepFakeDetection scene) keeps its whole video_key as its own cluster,
    since a "_" there says nothing about who is shown.
    """
    keys = pd.Series(list(video_keys), dtype=str)
    target = keys.str.rsplit("/", n=1).str[-1].str.extract(r"^(\d+)(?:_\d+)?$", expand=False)
    return target.fillna(keys).to_numpy(dtype=object)


def _eer(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Equal error rate: where the ROC curve crosses FNR = FPR, interpolated linearly between ROC points
    (each point between two thresholds is reachable by randomising between them)."""
    fpr, tpr, _ = roc_curve(labels, scores, sample_weight=weights)
    gap = (1.0 - tpr) - fpr  # decreasing along the curve, from 1 at (0, 0) to -1 at (1, 1)
    i = int(np.argmax(gap <= 0))
    if gap[i] == 0:
        return float(fpr[i])
    t = gap[i - 1] / (gap[i - 1] - gap[i])
    return float(fpr[i - 1] + t * (fpr[i] - fpr[i - 1]))


def choose_threshold(val_labels: np.ndarray, val_scores: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Threshold (score >= threshold means fake) maximising Youden's J = TPR - FPR on validation data, which
    is the same as maximising balanced accuracy, so class imbalance (4 fakes per original) does not push it.

    Returns the midpoint between the best cut and the next lower validation score: every threshold in that
    gap classifies validation alike, and the middle leaves most margin for test scores. `weights`: sample
    weights (e.g. `video_weights`).
    """
    labels = np.asarray(val_labels)
    if len(np.unique(labels)) < 2:
        raise ValueError("choose_threshold: validation labels hold one class only; cannot choose a threshold")
    fpr, tpr, thresholds = roc_curve(
        labels, np.asarray(val_scores, dtype=float), sample_weight=weights, drop_intermediate=False
    )
    # Index 0 is roc_curve's +inf threshold (nothing fake); skip it so the threshold is always finite.
    i = 1 + int(np.argmax((tpr - fpr)[1:]))
    if i + 1 < len(thresholds):
        return float((thresholds[i] + thresholds[i + 1]) / 2)
    return float(thresholds[i])


def binary_metrics(
    labels: np.ndarray, scores: np.ndarray, threshold_val: float | None = None, weights: np.ndarray | None = None
) -> dict:
    """AUC, AP, EER, accuracy, balanced accuracy and F1 at 0.5, (balanced) accuracy at `threshold_val`, counts.

    `weights` are sample weights for every metric (e.g. `video_weights` of frame scores); the counts stay
    plain row counts. With one class only, AUC, AP and EER are NaN and `single_class` is True (they are
    undefined, not 0.5). `acc_val`/`bacc_val` are NaN when no validation threshold is given.
    """
    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=float)
    if labels.shape != scores.shape or labels.ndim != 1 or labels.size == 0:
        raise ValueError(
            f"binary_metrics: labels {labels.shape} and scores {scores.shape} must be equal, non-empty 1-d arrays"
        )
    n_pos = int(labels.sum())
    n_neg = int(labels.size - n_pos)
    single = n_pos == 0 or n_neg == 0
    if weights is not None:
        weights = np.asarray(weights, dtype=float)
        if weights.shape != labels.shape:
            raise ValueError(f"binary_metrics: weights {weights.shape} must match labels {labels.shape}")
    at_half = (scores >= 0.5).astype(int)
    has_thr = threshold_val is not None and np.isfinite(threshold_val)
    at_val = (scores >= threshold_val).astype(int) if has_thr else None
    w = {"sample_weight": weights}

    def bacc(predicted: np.ndarray) -> float:
        # With one class present, balanced accuracy is that class's recall: plain accuracy (sklearn would warn).
        return float((accuracy_score if single else balanced_accuracy_score)(labels, predicted, **w))

    return {
        "n": int(labels.size),
        "n_pos": n_pos,
        "n_neg": n_neg,
        "single_class": single,
        "auc": np.nan if single else float(roc_auc_score(labels, scores, **w)),
        "ap": np.nan if single else float(average_precision_score(labels, scores, **w)),
        "eer": np.nan if single else _eer(labels, scores, weights),
        "acc_05": float(accuracy_score(labels, at_half, **w)),
        "bacc_05": bacc(at_half),
        "f1_05": float(f1_score(labels, at_half, zero_division=0.0, **w)),
        "threshold_val": float(threshold_val) if has_thr else np.nan,
        "acc_val": float(accuracy_score(labels, at_val, **w)) if has_thr else np.nan,
        "bacc_val": bacc(at_val) if has_thr else np.nan,
    }


def weighted_aucs(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC under each row of sample weights `weights` (B × N) at once.

    The Mann-Whitney form: the weighted share of (fake, real) pairs the scores order correctly, ties counted
    half; this is the value roc_auc_score gives with the same sample_weight (tests check they agree). One
    sort serves every row, where B calls of roc_auc_score would sort B times: it makes 1,000 bootstrap
    replicates cheap.
    """
    order = np.argsort(scores, kind="stable")
    s, fake = scores[order], labels[order] == 1
    new_level = np.r_[True, s[1:] != s[:-1]]
    level = np.cumsum(new_level) - 1  # index of each sample's score among the distinct scores
    starts = np.flatnonzero(new_level)
    ends = np.r_[starts[1:], s.size] - 1
    w = np.asarray(weights, dtype=float)[:, order]
    real_cum = np.cumsum(np.where(fake, 0.0, w), axis=1)
    below = np.where(starts > 0, real_cum[:, np.maximum(starts - 1, 0)], 0.0)  # real weight under each level
    tied = real_cum[:, ends] - below
    pos = np.where(fake, w, 0.0)
    return (pos * (below[:, level] + 0.5 * tied[:, level])).sum(1) / (pos.sum(1) * real_cum[:, -1])


def bootstrap_counts(
    labels: np.ndarray, groups: np.ndarray | None, n: int, seed: int = 0, stratify: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """The resamples of `bootstrap_auc_ci`: (n × G multiplicity of each group in each replicate, each row's group
    index). Row i of the data weighs counts[r, codes[i]] in replicate r, so all rows of a group are drawn together.

    stratify=True: every group must hold one class; each class's groups are drawn with replacement, as many as
    it has, so every replicate keeps both classes and the class sizes. stratify=False: groups may hold both
    classes (identity clusters); G groups are drawn with replacement from all of them, and a replicate that
    lacks a class is redrawn (the AUC is undefined there), so the n replicates are draws conditioned on both
    classes being present. With both classes in the data a draw has both with probability over 1 - 2/e, so
    redrawing ends quickly. Raises ValueError when the data hold one class only.
    """
    labels = np.asarray(labels).astype(int)
    codes, uniques = pd.factorize(pd.Series(groups if groups is not None else np.arange(labels.size)))
    size = len(uniques)
    has = np.zeros((2, size), dtype=bool)
    for c in (0, 1):
        has[c, codes[labels == c]] = True
    if not (has[0].any() and has[1].any()):
        raise ValueError("bootstrap_counts: the labels hold one class only; no replicate can have both")
    rng = np.random.default_rng(seed)
    if stratify:
        if (has[0] & has[1]).any():
            raise ValueError(
                "bootstrap_auc_ci: a group holds both labels; groups must be videos of one class, "
                "or pass stratify=False to resample mixed clusters (e.g. identities)"
            )
        counts = np.zeros((n, size))
        for c in (0, 1):
            members = np.flatnonzero(has[c])
            counts[:, members] = rng.multinomial(members.size, np.full(members.size, 1.0 / members.size), size=n)
        return counts, codes
    kept: list[np.ndarray] = []
    found = 0
    while found < n:
        draw = rng.multinomial(size, np.full(size, 1.0 / size), size=n).astype(float)
        draw = draw[(draw @ has[0] > 0) & (draw @ has[1] > 0)][: n - found]
        kept.append(draw)
        found += len(draw)
    return np.concatenate(kept), codes


def bootstrap_auc_ci(
    labels: np.ndarray,
    scores: np.ndarray,
    n: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    groups: np.ndarray | None = None,
    weights: np.ndarray | None = None,
    stratify: bool = True,
) -> tuple[float, float]:
    """Percentile bootstrap CI of the ROC AUC.

    With `groups` whole groups are resampled: frames of one video, or the videos of one identity
    (`identity_keys`), are correlated, and resampling them one by one would make the interval too narrow.
    stratify=True (groups of one class, e.g. video_key) resamples within each class; stratify=False resamples
    clusters that may hold both classes and redraws replicates left with one class (`bootstrap_counts`), so
    there are always `n` replicates. A resample is applied as integer sample weights (its multiplicities), which
    gives the same AUC as repeating rows; `weights` (e.g. `video_weights`) multiply them inside every replicate.
    (NaN, NaN) when one class is missing.
    """
    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=float)
    if len(np.unique(labels)) < 2:
        return (np.nan, np.nan)
    counts, codes = bootstrap_counts(labels, groups, n, seed, stratify)
    base = np.ones(labels.size) if weights is None else np.asarray(weights, dtype=float)
    rows = max(1, 2_000_000 // labels.size)  # replicates at a time: bounded memory for big test sets
    aucs = np.concatenate(
        [weighted_aucs(labels, scores, counts[a : a + rows, codes] * base) for a in range(0, n, rows)]
    )
    lo, hi = np.percentile(aucs, [50 * (1 - level), 50 * (1 + level)])
    return (float(lo), float(hi))


def _train_methods(train_methods: str) -> tuple[str, ...]:
    """Methods a run was trained on: "all", or names joined by "+" (e.g. "Deepfakes")."""
    return METHODS if train_methods == "all" else ("original", *train_methods.split("+"))


def _level_table(rows: pd.DataFrame, level: str) -> pd.DataFrame:
    return rows if level == "frame" else video_scores(rows)


def _weights(rows: pd.DataFrame, level: str) -> np.ndarray | None:
    """Frame level: every video weighs 1 (module docstring); video level: one row per video already."""
    return video_weights(rows["video_key"].to_numpy()) if level == "frame" else None


def _evaluate_run(run: tuple, test: pd.DataFrame, val: pd.DataFrame, n_boot: int, seed: int) -> list[dict]:
    rows = []
    for level in LEVELS:
        level_val = _level_table(val, level)
        threshold = choose_threshold(
            level_val["label"].to_numpy(), level_val["score"].to_numpy(), _weights(level_val, level)
        )
        level_test = _level_table(test, level)
        for test_set, methods in TEST_SETS.items():
            if test_set != "all" and methods[1] not in set(level_test["method"]):
                continue
            part = level_test[level_test["method"].isin(methods)]
            labels, scores, weights = part["label"].to_numpy(), part["score"].to_numpy(), _weights(part, level)
            metrics = binary_metrics(labels, scores, threshold, weights)
            metrics["auc_lo"], metrics["auc_hi"] = np.nan, np.nan
            if n_boot:
                # Identity clusters at both levels (module docstring); frames keep their 1/frames weights.
                metrics["auc_lo"], metrics["auc_hi"] = bootstrap_auc_ci(
                    labels,
                    scores,
                    n=n_boot,
                    seed=seed,
                    groups=identity_keys(part["video_key"]),
                    weights=weights,
                    stratify=False,
                )
            rows.append({**dict(zip(RUN_KEYS, run, strict=True)), "test_set": test_set, "level": level, **metrics})
    return rows


def metric_table(
    pred_test: pd.DataFrame, pred_val: pd.DataFrame, n_boot: int = 1000, seed: int = 0, n_jobs: int = 1
) -> pd.DataFrame:
    """One row per run (detector, train_quality, train_methods, test_quality) × test set × level, `EVAL_COLUMNS`.

    Test sets are `TEST_SETS` (a method's fakes against all originals, and "all"); a set whose manipulation
    is absent from the predictions is left out. The accuracy threshold of a run is chosen (`choose_threshold`)
    once per level on its validation predictions in the training condition: test_quality == train_quality,
    methods it was trained on. It is thus fixed before the detector meets another quality, so calibration
    drift under compression shows in acc_val. Frame-level metrics weigh every video equally (module
    docstring), so they do not depend on how many frames each method or video contributes. AUC CIs
    (`bootstrap_auc_ci`, `n_boot` replicates; 0 skips them) resample target identities (`identity_keys`:
    an original with all its fakes) at both levels. Runs are evaluated in `n_jobs` processes; the result does
    not depend on `n_jobs`.
    """
    check_predictions(pred_test, "pred_test", split="test")
    check_predictions(pred_val, "pred_val", split="val")
    val_runs = dict(list(pred_val.groupby(RUN_KEYS, sort=True)))
    tasks = []
    for run, test in pred_test.groupby(RUN_KEYS, sort=True):
        detector, train_quality, train_methods, _ = run
        val = val_runs.get((detector, train_quality, train_methods, train_quality))
        if val is None:
            raise ValueError(
                f"pred_val: no validation predictions at test_quality {train_quality} for "
                f"{detector} trained on {train_methods} at q{train_quality}; the accuracy threshold "
                "is chosen there"
            )
        tasks.append(
            delayed(_evaluate_run)(run, test, val[val["method"].isin(_train_methods(train_methods))], n_boot, seed)
        )
    runs = Parallel(n_jobs=n_jobs)(tasks)
    return pd.DataFrame([row for rows in runs for row in rows], columns=EVAL_COLUMNS)
