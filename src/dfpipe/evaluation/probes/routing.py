"""Probes scored across datasets (the probe rows of the cross-dataset matrix): one probe_table call, trained
through any dataset's getter or through the union of every dataset with a train split (`union_getter`), is
fitted once per setting and scores every dataset's test split.

Its test qualities (`routed_qualities`) are plain qualities for the training dataset's own test split, served
by the training getter, and a `TestSet` for each other dataset's, served by that dataset's getter
(`routed_getter`); `split_routed` sorts the table's rows back by dataset and `routed_probe_rows` makes them
matrix rows."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from dfpipe.config import UNION
from dfpipe.evaluation.crossdataset import MATRIX_COLUMNS, probe_rows
from dfpipe.evaluation.probes.features import FeatureSet, Getter, pool


@dataclass(frozen=True)
class TestSet:
    """The test split of dataset `dataset` at JPEG quality `quality`, as a test quality of a probe_table call
    through `routed_getter`."""

    __test__ = False  # a data type, not a pytest class

    dataset: str
    quality: int

    def __str__(self) -> str:  # the probe table's log lines print a test quality after "q"
        return f"{self.quality} of {self.dataset}"


def routed_getter(default: Getter, others: Mapping[str, Getter]) -> Getter:
    """A getter whose quality may be a `TestSet` (served by `others[dataset]`); a plain quality goes to
    `default`, the training getter (its train and val splits, and its own test split when it has one). Any
    training getter (the main dataset's, a test source's, the union's) routed to every dataset lets one
    probe_table call fit once per setting and score every dataset's test split (`routed_qualities`)."""

    def get(backbone: str, quality: Any, split: str, transform: str) -> FeatureSet:
        if isinstance(quality, TestSet):
            return others[quality.dataset](backbone, quality.quality, split, transform)
        return default(backbone, quality, split, transform)

    return get


def routed_qualities(qualities: Sequence[int], datasets: Iterable[str], own: str | None = None) -> list[int | TestSet]:
    """The test qualities of a probe_table call through `routed_getter` that scores every one of `datasets`:
    plain for `own` (the training dataset, whose test split the training getter serves), a `TestSet` for each
    other. `own` None (the union, which has no test split of its own): a `TestSet` for every dataset."""
    plain = list(qualities) if own is not None else []
    return [*plain, *(TestSet(name, q) for name in datasets if name != own for q in qualities)]


def union_getter(getters: Mapping[str, Getter]) -> Getter:
    """A training getter over the union of datasets: the train (and val) features of every getter pooled
    (`pool`, from each dataset's own feature cache: no backbone pass of its own). A dataset without a val
    split leaves the threshold to the others. It has no test split: route it to each dataset's
    (`routed_getter`, `routed_qualities` with own None)."""

    def get(backbone: str, quality: Any, split: str, transform: str) -> FeatureSet:
        if split == "test":
            raise ValueError(f"{UNION}: no test split of its own; score it on each dataset's through routed_getter")
        parts = {}
        for name, one in getters.items():
            try:
                parts[name] = one(backbone, quality, split, transform)
            except FileNotFoundError:
                if split == "train":
                    raise
        if not parts:
            raise FileNotFoundError(f"{UNION}: none of {list(getters)} has a {split} split at q{quality}")
        return pool(parts)

    return get


def split_routed(table: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """A probe table scored through `routed_getter` → (rows of the training dataset's own test split, {dataset
    name: its rows}), test qualities back to integers."""
    dataset = table["test_quality"].map(lambda q: q.dataset if isinstance(q, TestSet) else None)
    own = table[dataset.isna()].copy()
    own["test_quality"] = own["test_quality"].astype(int)
    out = {}
    for name in dataset.dropna().unique():
        part = table[dataset == name].copy()
        part["test_quality"] = part["test_quality"].map(lambda q: q.quality).astype(int)
        out[name] = part
    return own, out


def routed_probe_rows(table: pd.DataFrame, train_dataset: str) -> pd.DataFrame:
    """Matrix rows of a probe table scored through `routed_getter`: the plain test qualities as `train_dataset`'s
    own test split, each `TestSet` as its dataset's."""
    own, routed = split_routed(table)
    parts = [(train_dataset, own), *routed.items()] if len(own) else list(routed.items())
    rows = [r for r in (probe_rows(part, train_dataset, name) for name, part in parts) if len(r)]
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=MATRIX_COLUMNS)
