"""The probe classifiers: the seed's twelve scikit-learn estimators by name, and the scores that rank samples
by how fake a fitted one finds them. Adding a classifier is one `REGISTRY` entry and its name in the config
schema's probes.classifiers enum (tests/test_probes.py ties the two)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis, QuadraticDiscriminantAnalysis
from sklearn.ensemble import BaggingClassifier, HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsClassifier
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier

# name -> factory(seed): an unfitted estimator
REGISTRY: dict[str, Callable[[int], Any]] = {
    "bagging": lambda s: BaggingClassifier(random_state=s),
    "decision_tree": lambda s: DecisionTreeClassifier(random_state=s),
    "random_forest": lambda s: RandomForestClassifier(random_state=s),
    "lda": lambda s: LinearDiscriminantAnalysis(),
    # features outnumber samples in small sets: the class covariances need shrinkage (Ledoit-Wolf)
    "qda": lambda s: QuadraticDiscriminantAnalysis(solver="eigen", shrinkage="auto", tol=1e-9),
    "knn1": lambda s: KNeighborsClassifier(1),
    "knn3": lambda s: KNeighborsClassifier(3),
    "knn5": lambda s: KNeighborsClassifier(5),
    "linear_probe": lambda s: LogisticRegression(max_iter=2000),
    # no Platt scaling (probability=True fits 5 more SVMs): scored by decision_function
    "svm": lambda s: SVC(random_state=s),
    # scikit-learn's histogram gradient boosting: ~5x faster than GradientBoostingClassifier on raw 1280-d
    # backbone features (7 s against 35 s per fit on one core), so reduction "none" stays affordable
    "gradient_boosting": lambda s: HistGradientBoostingClassifier(random_state=s),
    "naive_bayes": lambda s: GaussianNB(),
}
CLASSIFIERS = tuple(REGISTRY)


def make_classifier(name: str, seed: int = 0) -> Any:
    if name not in REGISTRY:
        raise ValueError(f"classifier {name!r}: allowed {list(REGISTRY)}")
    return REGISTRY[name](seed)


def fake_scores(clf: Any, x: np.ndarray) -> tuple[np.ndarray, str]:
    """Scores that rank samples by how fake (label 1) the classifier finds them, and which method gave them:
    `predict_proba` where the classifier has it, else `decision_function`."""
    classes = list(getattr(clf, "classes_", []))
    if hasattr(clf, "predict_proba"):
        return clf.predict_proba(x)[:, classes.index(1)], "predict_proba"
    if hasattr(clf, "decision_function"):
        d = np.asarray(clf.decision_function(x), dtype=float)
        return (d if classes[-1] == 1 else -d), "decision_function"
    raise TypeError(f"{type(clf).__name__} has neither predict_proba nor decision_function: no scores for an AUC")
