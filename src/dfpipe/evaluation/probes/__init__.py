"""Frozen-backbone probes (the seed's approach 2): features of a frozen pretrained backbone, then classical
classifiers on them, optionally after a dimensionality reduction, with blur/jitter transforms at train and test.
`backbones` holds the registry of backbones (CLIP ViT-B/16, DINO ViT-B/16 and ResNet-50, the offline ImageNet
MobileNetV2 and EfficientNet-Lite0) as specs with their input size and weights identity; `build` builds them
frozen (timm or open_clip, weights from the hub, a packaged file, a URL or a file) and keeps the last few built;
`transforms` the train/test transforms, resizing and normalisation; `features` the `FeatureSet` that the other
modules pass around, the getter type and the concatenation of backbones and pooling of datasets; `extract` the
forward passes and the on-disk feature cache, for arrays or a job's declared shard tars; `reductions` none, PCA
and the autoencoder; `classifiers` the classifier registry and fake scores; `table` the probe table and its
metrics; `report` its CSV, markdown and effects plot; `routing` scores one fit on every dataset's test split for
the cross-dataset matrix (imported as `dfpipe.evaluation.probes.routing`: it builds on
`dfpipe.evaluation.crossdataset`, which imports this package). The names below are the package's API.
"""

from __future__ import annotations

from dfpipe.evaluation.probes.backbones import (
    BACKBONES,
    WEIGHTS_HINT,
    BackboneSpec,
    backbone_spec,
    file_sha256,
    input_config,
    native_input,
    weights_id,
)
from dfpipe.evaluation.probes.build import BUILT, KEEP_BUILT, Backbone, build_backbone, shared_backbone
from dfpipe.evaluation.probes.classifiers import CLASSIFIERS, fake_scores, make_classifier
from dfpipe.evaluation.probes.extract import (
    array_features,
    cache_key,
    cache_paths,
    extract_features,
    shard_features,
    shard_getter,
    shard_sets,
    shards_fingerprint,
)
from dfpipe.evaluation.probes.features import META_COLUMNS, FeatureSet, Getter, concat, pool
from dfpipe.evaluation.probes.reductions import REDUCTIONS, Reduction
from dfpipe.evaluation.probes.report import plot_probe_effects, write_probe_results
from dfpipe.evaluation.probes.table import PROBE_COLUMNS, evaluate_scores, probe_table
from dfpipe.evaluation.probes.transforms import TRANSFORMS, normalise, resize_batch

__all__ = [
    "BACKBONES",
    "BUILT",
    "CLASSIFIERS",
    "KEEP_BUILT",
    "META_COLUMNS",
    "PROBE_COLUMNS",
    "REDUCTIONS",
    "TRANSFORMS",
    "WEIGHTS_HINT",
    "Backbone",
    "BackboneSpec",
    "FeatureSet",
    "Getter",
    "Reduction",
    "array_features",
    "backbone_spec",
    "build_backbone",
    "cache_key",
    "cache_paths",
    "concat",
    "evaluate_scores",
    "extract_features",
    "fake_scores",
    "file_sha256",
    "input_config",
    "make_classifier",
    "native_input",
    "normalise",
    "plot_probe_effects",
    "pool",
    "probe_table",
    "resize_batch",
    "shard_features",
    "shard_getter",
    "shard_sets",
    "shards_fingerprint",
    "shared_backbone",
    "weights_id",
    "write_probe_results",
]
