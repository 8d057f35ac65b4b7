"""Any timm image model as a detector: its pooled features -> dropout -> one logit.

Mean/std come from the model's timm pretrained config, i.e. what its ImageNet weights were trained with
(0.5 for the `tf_` EfficientNets and timm's MobileNetV1, ImageNet statistics for ResNet, MobileNetV2, ...).
Blocks for `unfreeze_last` are timm's own coarse parameter groups: the stem, then one per stage (the last
one holds the final 1×1 conv of EfficientNets/MobileNets).
"""

from __future__ import annotations

import timm
from timm.models import group_parameters
from torch import Tensor, nn

from dfpipe.models.detectors.base import Detector

# Input sizes where timm's train size is not ours. EfficientNet-B4: 256, the crop size of the shards and
# DeepfakeBench's B4 recipe, rather than timm's 320/380 (upscaling 256 crops adds cost and no detail).
INPUT_SIZES = {"efficientnet_b4": 256}


class TimmDetector(Detector):
    def __init__(
        self, model_name: str, *, input_size: int | None = None, dropout: float | None = None, **timm_kwargs: object
    ) -> None:
        if not timm.is_model(model_name):
            raise ValueError(
                f"detector {model_name!r}: neither a registered detector nor a timm model "
                f"(see dfpipe.models.detectors.list_detectors() and timm.list_models())"
            )
        backbone = timm.create_model(model_name, num_classes=0, **timm_kwargs)
        cfg = backbone.pretrained_cfg
        super().__init__(
            backbone,
            backbone.num_features,
            input_size=input_size or INPUT_SIZES.get(model_name, cfg["input_size"][-1]),
            mean=cfg["mean"],
            std=cfg["std"],
            dropout=dropout or 0.0,
        )
        self.weights_name = model_name

    def features(self, x: Tensor) -> Tensor:
        return self.backbone(x)

    def backbone_groups(self) -> list[list[nn.Parameter]]:
        named = dict(self.backbone.named_parameters())
        groups = group_parameters(self.backbone, self.backbone.group_matcher(coarse=True))
        return [[named[n] for n in names] for names in groups.values()]

    def cam_layer(self) -> tuple[str, nn.Module]:
        """The module whose output the global pool reduces (EfficientNet / MobileNetV2: `bn2` after the 1×1 head
        conv; ResNet: `layer4`); without a pooling child, the last entry of timm's `feature_info`."""
        children = list(self.backbone.named_children())
        names = [n for n, _ in children]
        if "global_pool" in names:
            # the nearest module before the pool that computes something: timm's MobileNetV1 has no head conv, its
            # conv_head and bn2 are Identity placeholders, so its maps are those of the last stage (`blocks`)
            before = [(n, m) for n, m in children[: names.index("global_pool")] if not isinstance(m, nn.Identity)]
            if before:
                return f"backbone.{before[-1][0]}", before[-1][1]
        info = getattr(self.backbone, "feature_info", None)
        if info is not None:
            name = info[-1]["module"] if isinstance(info, list) else info.module_name()[-1]
            return f"backbone.{name}", self.backbone.get_submodule(name)
        return super().cam_layer()
