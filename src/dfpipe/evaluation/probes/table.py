"""The probe table: every backbone × reduction × classifier × train transform × test transform × train quality ×
test quality fitted on one getter's features and scored, with ACC and balanced ACC (at the classifier's own
decision and at a threshold chosen on the val split), AUC with a bootstrap interval over videos and the val
split's AUC."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from dfpipe.config import schema_defaults
from dfpipe.evaluation.metrics import bootstrap_auc_ci, choose_threshold, video_weights, weighted_aucs
from dfpipe.evaluation.probes.classifiers import CLASSIFIERS, fake_scores, make_classifier
from dfpipe.evaluation.probes.features import FeatureSet, Getter, concat
from dfpipe.evaluation.probes.reductions import REDUCTIONS, Reduction
from dfpipe.evaluation.probes.transforms import TRANSFORMS

logger = logging.getLogger(__name__)

# default arguments below are the config schema's (probes section), so a call outside the workflow scores alike
_DEFAULTS = schema_defaults("probes")

PROBE_COLUMNS = [
    "backbone",
    "reduction",
    "classifier",
    "train_transform",
    "test_transform",
    "train_quality",
    "test_quality",
    "n",
    "n_pos",
    "n_neg",
    "acc",
    "bacc",
    "threshold_val",
    "acc_val",
    "bacc_val",
    "auc_val",
    "auc",
    "auc_lo",
    "auc_hi",
    "score_by",
    "error",
]


def _getter_with_concat(get: Getter) -> Getter:
    memo: dict[tuple, FeatureSet] = {}

    def fetch(backbone: str, quality: Any, split: str, transform: str) -> FeatureSet:
        key = (backbone, quality, split, transform)
        if key not in memo:
            parts = backbone.split("+")
            memo[key] = (
                get(parts[0], quality, split, transform)
                if len(parts) == 1
                else concat([fetch(p, quality, split, transform) for p in parts])
            )
        return memo[key]

    return fetch


def _accuracies(labels: np.ndarray, predicted: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """Accuracy and balanced accuracy (the mean of the per-class recalls; plain accuracy with one class, as
    binary_metrics) of `predicted`, every sample weighing `w`."""
    right = w * (np.asarray(predicted).astype(int) == labels)
    bacc = float(np.mean([right[labels == c].sum() / w[labels == c].sum() for c in np.unique(labels)]))
    return float(right.sum() / w.sum()), bacc


def evaluate_scores(
    labels: np.ndarray,
    scores: np.ndarray,
    predicted: np.ndarray,
    video_keys: np.ndarray,
    n_boot: int,
    seed: int,
    threshold: float | None = None,
) -> dict[str, Any]:
    """ACC and balanced ACC of the classifier's own decisions, and at the validation `threshold` on its scores
    (NaN without one), AUC of its scores with a bootstrap interval over videos, every video weighing 1
    (dfpipe.evaluation.metrics' module docstring). The AUC is metrics.weighted_aucs (what binary_metrics gives, tested
    equal): a table has thousands of rows, and binary_metrics' other metrics cost ten times more than these
    together."""
    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=float)
    w = video_weights(video_keys)
    single = len(np.unique(labels)) < 2
    auc = np.nan if single else float(weighted_aucs(labels, scores, w[None])[0])
    acc, bacc = _accuracies(labels, predicted, w)
    acc_val, bacc_val = (np.nan, np.nan) if threshold is None else _accuracies(labels, scores >= threshold, w)
    lo, hi = (
        (np.nan, np.nan)
        if single or not n_boot
        else bootstrap_auc_ci(labels, scores, n=n_boot, seed=seed, groups=video_keys, weights=w)
    )
    return {
        "n": int(labels.size),
        "n_pos": int((labels == 1).sum()),
        "n_neg": int((labels == 0).sum()),
        "acc": acc,
        "bacc": bacc,
        "threshold_val": np.nan if threshold is None else float(threshold),
        "acc_val": acc_val,
        "bacc_val": bacc_val,
        "auc": auc,
        "auc_lo": lo,
        "auc_hi": hi,
    }


def probe_table(
    get: Getter,
    *,
    backbones: Sequence[str],
    train_qualities: Sequence[Any],
    test_qualities: Sequence[Any],
    reductions: Sequence[str] = REDUCTIONS,
    classifiers: Sequence[str] = CLASSIFIERS,
    transforms: Sequence[str] = tuple(TRANSFORMS),
    test_transforms: Sequence[str] = ("none",),
    components: int = _DEFAULTS["components"],
    ae_epochs: int = _DEFAULTS["ae_epochs"],
    n_boot: int = _DEFAULTS["bootstrap"],
    seed: int = 0,
    test_get: Getter | None = None,
    blas_threads: int | None = 1,
) -> pd.DataFrame:
    """One row per backbone × reduction × classifier × train transform × test transform × train quality ×
    test quality (`PROBE_COLUMNS`). Trained on the "train" split of the train quality with the train transform,
    tested on the "test" split. ACC and balanced ACC are given at the classifier's own decision and at the
    threshold chosen on the untransformed "val" split of the training data (Youden's J, videos weighing alike,
    as the AUC table does), and `auc_val` is the AUC of the same val scores; NaN where the training data has no
    val split (`get` raises FileNotFoundError for it). `get` returns cached features; a backbone "a+b"
    concatenates a's and b's.
    `test_get` (default `get`) gives the test features: another dataset's for a cross-dataset table.

    A classifier that fails to fit or score keeps its row, with NaN metrics and the exception in `error`
    (and a log line): nothing is dropped silently.

    The fits run with `blas_threads` BLAS threads (None: the library's default). One is the default: these
    matrices are small, and on a busy 2-core machine contended BLAS threads made QDA's fit 7x and LDA's 30x
    slower; parallelism belongs to the jobs running several tables at once."""
    with threadpool_limits(blas_threads):
        return _probe_table(
            _getter_with_concat(get),
            _getter_with_concat(test_get or get),
            backbones,
            train_qualities,
            test_qualities,
            reductions,
            classifiers,
            transforms,
            test_transforms,
            components,
            ae_epochs,
            n_boot,
            seed,
        )


def _probe_table(
    get: Getter,
    test_get: Getter,
    backbones: Sequence[str],
    train_qualities: Sequence[Any],
    test_qualities: Sequence[Any],
    reductions: Sequence[str],
    classifiers: Sequence[str],
    transforms: Sequence[str],
    test_transforms: Sequence[str],
    components: int,
    ae_epochs: int,
    n_boot: int,
    seed: int,
) -> pd.DataFrame:
    rows = []
    for backbone in backbones:
        for tq in train_qualities:
            try:  # untransformed, as a detector's validation: the threshold is for the images as they come
                val = get(backbone, tq, "val", "none")
            except FileNotFoundError:  # a dataset without val shards: no threshold, no val AUC
                val = None
            for tt in transforms:
                train = get(backbone, tq, "train", tt)
                if len(np.unique(train.labels)) < 2:
                    raise ValueError(
                        f"probes: the train split of {backbone} q{tq} holds one label only; a probe "
                        "needs real and fake training samples"
                    )
                for red in reductions:
                    reducer = Reduction(red, components, seed, ae_epochs).fit(train.features)
                    x_train = reducer.transform(train.features)
                    x_val = None if val is None else (reducer.transform(val.features), val)
                    tests = {
                        (q, te): test_get(backbone, q, "test", te) for q in test_qualities for te in test_transforms
                    }
                    reduced = {k: reducer.transform(v.features) for k, v in tests.items()}
                    for name in classifiers:
                        base = {
                            "backbone": backbone,
                            "reduction": red,
                            "classifier": name,
                            "train_transform": tt,
                            "train_quality": tq,
                        }
                        rows += _classifier_rows(name, x_train, train.labels, x_val, tests, reduced, base, n_boot, seed)
    return pd.DataFrame(rows).reindex(columns=PROBE_COLUMNS)


def _classifier_rows(
    name: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: tuple[np.ndarray, FeatureSet] | None,
    tests: Mapping[tuple, FeatureSet],
    reduced: Mapping[tuple, np.ndarray],
    base: dict[str, Any],
    n_boot: int,
    seed: int,
) -> list[dict[str, Any]]:
    """One classifier fitted once (its threshold and val AUC from the reduced validation features `x_val` when
    given, never from a test set) and scored on every test set; a failure is kept in `error`, not dropped."""
    threshold, auc_val = None, np.nan
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # collinearity and convergence chatter
            clf = make_classifier(name, seed).fit(x_train, y_train)
            if x_val is not None:
                x, val = x_val
                w = video_weights(val.meta["video_key"].to_numpy())
                val_scores = fake_scores(clf, x)[0]
                threshold = choose_threshold(val.labels, val_scores, w)
                auc_val = float(weighted_aucs(val.labels, val_scores, w[None])[0])
        error = ""
    except Exception as exn:  # any estimator failure is reported in its rows
        clf, error = None, f"fit: {type(exn).__name__}: {exn}"
    rows = []
    for (q, te), fs in tests.items():
        row = {**base, "test_transform": te, "test_quality": q, "auc_val": auc_val, "score_by": "", "error": error}
        if clf is not None:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    scores, row["score_by"] = fake_scores(clf, reduced[(q, te)])
                    predicted = clf.predict(reduced[(q, te)])
                keys = fs.meta["video_key"].to_numpy()
                row.update(evaluate_scores(fs.labels, scores, predicted, keys, n_boot, seed, threshold))
            except Exception as exn:  # as above
                row["error"] = f"score: {type(exn).__name__}: {exn}"
        if row["error"]:
            logger.warning(
                f"probes: {base['backbone']}/{base['reduction']}/{name} train q{base['train_quality']} "
                f"{base['train_transform']}, test q{q} {te}: {row['error']}"
            )
        rows.append(row)
    return rows
