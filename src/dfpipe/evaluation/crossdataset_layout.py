"""Where a test source's shards lie and how its config entry is found: what the rule files need of
`dfpipe.evaluation.crossdataset` when Snakemake reads the workflow.

Light on purpose (standard library only): every dry run, no-op rerun and cluster job parses the rule files, and
`dfpipe.evaluation.crossdataset` imports torch, timm, scikit-learn and OpenCV through the probes and the face stage, which
cost seconds each time (`tests/test_workflow_imports.py` checks that this module stays light).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

# train and val: for probes trained on the source (val chooses their threshold and ranks them); test: what every
# model is scored on. Val images never join the test split: a source's val identities may be the main dataset's.
SPLITS = ("train", "val", "test")


def source_entry(config: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The `evaluate.test_sources` entry called `name`."""
    return next(s for s in config["evaluate"]["test_sources"] if s["name"] == name)


def source_shards(output_root: str, name: str, split: str, qualities: Sequence[int]) -> list[str]:
    """The shard tars of one test source and split at every quality."""
    return [f"{output_root}/test_sources/{name}/shards/q{q}/{split}-0000.tar" for q in qualities]
