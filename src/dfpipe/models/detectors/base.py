"""What every detector is: features -> dropout -> one linear logit (fake positive), with its input settings."""

from __future__ import annotations

from collections.abc import Mapping

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from dfpipe.models.weights import load_into

HALF = (0.5, 0.5, 0.5)


class Detector(nn.Module):
    """A binary deepfake detector.

    Subclasses set `backbone` (everything before the head) and implement `features` and `backbone_groups`.
    `weights_name` is the name `dfpipe.models.weights.resolve` looks up for `pretrained: imagenet`.
    """

    name: str
    weights_name: str

    def __init__(
        self,
        backbone: nn.Module,
        num_features: int,
        *,
        input_size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        dropout: float,
    ) -> None:
        super().__init__()
        if isinstance(dropout, bool) or not isinstance(dropout, int | float):
            raise ValueError(
                f"dropout: {dropout!r}; give one rate in [0, 1] (two rates are for the Meso nets' two dropouts)"
            )
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(num_features, 1)
        self.num_features = num_features
        self.input_size = int(input_size)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self._frozen_norms: list[nn.Module] = []

    def features(self, x: Tensor) -> Tensor:
        """Penultimate features [N, num_features] (what the head sees; for t-SNE)."""
        raise NotImplementedError

    def backbone_groups(self) -> list[list[nn.Parameter]]:
        """The backbone's parameters in blocks, input side first (what `unfreeze_last` counts)."""
        raise NotImplementedError

    def cam_layer(self) -> tuple[str, nn.Module]:
        """(name within the detector, module) of the layer Grad-CAM explains: the last Conv2d or norm layer of
        the backbone here; families with a better choice (the maps their pooling reduces) override it."""
        last = [
            (n, m)
            for n, m in self.backbone.named_modules()
            if isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm))
        ]
        if not last:
            raise ValueError(
                f"Grad-CAM: {type(self).__name__} has no convolutional layer to explain; it needs a CNN backbone"
            )
        return f"backbone.{last[-1][0]}", last[-1][1]

    def forward(self, x: Tensor) -> Tensor:
        return self.logits_and_features(x)[0]

    def logits_and_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Logits and the features they come from, in one pass (what `forward` gives in eval mode)."""
        feats = self.features(x)
        return self.head(self.dropout(feats)).squeeze(1), feats

    def loss(self, logits: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """Loss terms of a training step on this forward's `logits`; "loss" is the total that is minimised.

        Binary cross-entropy (in float32, also under autocast); detectors with terms of their own extend it.
        """
        bce = F.binary_cross_entropy_with_logits(logits.float(), labels.float())
        return {"loss": bce, "bce": bce}

    def unfreeze_last(self, k: int) -> None:
        """Train only the last `k` backbone blocks and the head (0: the head alone)."""
        groups = self.backbone_groups()
        if not 0 <= k <= len(groups):
            raise ValueError(
                f"unfreeze_last={k}: {self.name} has {len(groups)} backbone blocks; "
                f"use 0..{len(groups)}, or leave it unset to train everything"
            )
        for i, group in enumerate(groups):
            for p in group:
                p.requires_grad_(i >= len(groups) - k)
        # A frozen block's BatchNorm keeps its statistics too, else "frozen" layers would drift in training.
        self._frozen_norms = [
            m
            for m in self.backbone.modules()
            if isinstance(m, _BatchNorm)
            and any(True for _ in m.parameters())
            and not any(p.requires_grad for p in m.parameters())
        ]
        self.train(self.training)

    def train(self, mode: bool = True) -> Detector:
        super().train(mode)
        for m in self._frozen_norms:
            m.eval()
        return self

    def load_pretrained(self, state: Mapping[str, Tensor], source: str) -> None:
        """A whole-detector checkpoint (e.g. a training run's best.pt) loads as is; anything else goes into the
        backbone (a classifier it carries is ignored)."""
        if set(state) == set(self.state_dict()):
            try:
                self.load_state_dict(state)
            except RuntimeError as err:
                raise ValueError(
                    f"pretrained weights {source}: a {self.name} checkpoint with other settings "
                    f"({err}); build the detector with the settings it was trained with"
                ) from err
        else:
            load_into(self.backbone, state, source)
