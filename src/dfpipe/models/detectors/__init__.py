"""Detector registry: `create_detector(name, ...)` builds any registered detector or any timm model name.

Adding a detector is one module (a `Detector` subclass) and one line in `REGISTRY`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

from dfpipe.models.detectors.backbone import TimmDetector
from dfpipe.models.detectors.base import Detector
from dfpipe.models.detectors.meso import Meso4, MesoInception4
from dfpipe.models.detectors.multi_attention import MultiAttention
from dfpipe.models.weights import resolve

__all__ = ["REGISTRY", "Detector", "create_detector", "list_detectors"]

# name -> factory(input_size=..., dropout=..., **kwargs)
REGISTRY: dict[str, Callable[..., Detector]] = {
    "meso4": Meso4,
    "mesoinception4": MesoInception4,
    "efficientnet_b4": partial(TimmDetector, "efficientnet_b4"),
    "multi_attention": MultiAttention,
    "resnet18": partial(TimmDetector, "resnet18"),
    "resnet50": partial(TimmDetector, "resnet50"),
    "mobilenet_v1": partial(TimmDetector, "mobilenetv1_100"),
    "mobilenet_v2": partial(TimmDetector, "mobilenetv2_100"),
}
# registered name -> a registered model whose ImageNet weights ship offline (dfpipe.models.weights.PACKAGED), named when
# `pretrained: imagenet` cannot reach the timm hub: the MobileNet seed's V1 has hub weights only
OFFLINE_ALTERNATIVES = {"mobilenet_v1": "mobilenet_v2"}


def list_detectors() -> list[str]:
    """Registered names (any timm model name works as well)."""
    return sorted(REGISTRY)


def create_detector(
    name: str,
    *,
    pretrained: str = "none",
    input_size: int | None = None,
    dropout: float | Sequence[float] | None = None,
    unfreeze_last: int | None = None,
    **kwargs: object,
) -> Detector:
    """Build detector `name` with weights `pretrained` ("none", "imagenet" or a file path).

    `dropout` (before the head) defaults to the model's own (else 0); Meso nets apply it before their dense layer
    too (0.5 at both by default, as the paper) and take a pair [before dense, before output] as well;
    `unfreeze_last=k` trains only the backbone's last k blocks and the head; other kwargs go to the model.
    """
    factory = REGISTRY.get(name) or partial(TimmDetector, name)
    detector = factory(input_size=input_size, dropout=dropout, **kwargs)
    detector.name = name
    try:
        state = resolve(pretrained, detector.weights_name)
    except LookupError as err:
        if name not in OFFLINE_ALTERNATIVES:
            raise
        raise LookupError(
            f"{err}; offline, use model: {OFFLINE_ALTERNATIVES[name]} (ImageNet weights packaged with this pipeline)"
        ) from err
    if state is not None:
        detector.load_pretrained(state, source=pretrained)
    if unfreeze_last is not None:
        detector.unfreeze_last(unfreeze_last)
    return detector
