"""Multi-attentional deepfake detection (Zhao et al., CVPR 2021), written from the paper's description.

On a timm EfficientNet (features_only): M attention maps from a middle stage (1×1 conv, BN, ReLU); texture
enhancement of a shallow stage (the residual after subtracting a local average, then a densely connected
conv block); bilinear attention pooling of the texture features under each map (signed square root, L2
norm per map); concatenation with the globally pooled deep features; one logit. The regional independence
loss pulls each map's pooled feature to a running centre for that map and pushes the centres apart; a
training forward computes it (it moves the centres) and `loss()` adds it to the cross-entropy. In training,
attention-guided augmentation erases (sets to the mean colour) the region where one randomly chosen
attention map exceeds a random threshold.

Defaults follow the paper's EfficientNet-B4 set-up as we read it (texture from the stride-4 stage,
attention from the stride-16 stage, 4 maps); margins, weights and probabilities are ours.
"""

from __future__ import annotations

import timm
import torch
import torch.nn.functional as F
from timm.models import group_parameters
from timm.models.efficientnet import EfficientNetFeatures
from torch import Tensor, nn

from dfpipe.models.detectors.backbone import INPUT_SIZES
from dfpipe.models.detectors.base import Detector

# timm's coarse groups for EfficientNet (stem, then one per stage); its features-only class has no matcher.
EFFICIENTNET_GROUPS = {"stem": r"^conv_stem|bn1", "blocks": r"^blocks\.(\d+)"}


def _conv_bn_relu(c_in: int, c_out: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)
    )


class TextureEnhancement(nn.Module):
    """Shallow features minus their 3×3 local average (high-frequency texture), then a dense conv block."""

    def __init__(self, c_in: int, channels: int, layers: int = 3) -> None:
        super().__init__()
        self.project = _conv_bn_relu(c_in, channels, 1)
        self.dense = nn.ModuleList([_conv_bn_relu(channels * (i + 1), channels, 3) for i in range(layers)])
        self.fuse = _conv_bn_relu(channels * (layers + 1), channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        residual = x - F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
        outs = [self.project(residual)]
        for layer in self.dense:
            outs.append(layer(torch.cat(outs, dim=1)))
        return self.fuse(torch.cat(outs, dim=1))


class MultiAttention(Detector):
    def __init__(
        self,
        *,
        backbone: str = "efficientnet_b4",
        attention_maps: int = 4,
        texture_stage: int = 1,
        attention_stage: int = 3,
        texture_channels: int = 64,
        input_size: int | None = None,
        dropout: float | None = None,
        independence_weight: float = 1.0,
        margin_in: float = 0.05,
        margin_out: float = 0.2,
        centre_momentum: float = 0.05,
        augment_prob: float = 0.5,
        erase_threshold: tuple[float, float] = (0.2, 0.5),
    ) -> None:
        if not 0 <= texture_stage < attention_stage < 4:
            raise ValueError(
                f"multi_attention: need 0 <= texture_stage ({texture_stage}) < attention_stage "
                f"({attention_stage}) < 4 (EfficientNet feature stages, strides 2..32)"
            )
        net = timm.create_model(backbone, features_only=True, out_indices=(texture_stage, attention_stage, 4))
        if not isinstance(net, EfficientNetFeatures):
            raise ValueError(
                f"multi_attention: backbone={backbone!r} is not a timm EfficientNet; use e.g. "
                f"efficientnet_b4 or tf_efficientnet_lite0"
            )
        c_tex, c_att, c_deep = net.feature_info.channels()
        cfg = net.pretrained_cfg
        super().__init__(
            net,
            attention_maps * texture_channels + c_deep,
            input_size=input_size or INPUT_SIZES.get(backbone, cfg["input_size"][-1]),
            mean=cfg["mean"],
            std=cfg["std"],
            dropout=dropout or 0.0,
        )
        self.weights_name = backbone
        self.attention = _conv_bn_relu(c_att, attention_maps, 1)
        self.texture = TextureEnhancement(c_tex, texture_channels)
        self.independence_weight = independence_weight
        self.margin_in, self.margin_out, self.centre_momentum = margin_in, margin_out, centre_momentum
        self.augment_prob, self.erase_threshold = augment_prob, erase_threshold
        self.register_buffer("centres", torch.zeros(attention_maps, texture_channels))
        self.register_buffer("centres_set", torch.zeros((), dtype=torch.bool))
        self._independence: Tensor | None = None  # of the last training forward, for loss()

    def _pooled(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Per-map textural features [N, M, C] and features [N, D]."""
        shallow, middle, deep = self.backbone(x)
        maps = self.attention(middle)
        texture = self.texture(shallow)
        maps = F.interpolate(maps, size=texture.shape[-2:], mode="bilinear", align_corners=False)
        pooled = (torch.einsum("nmhw,nchw->nmc", maps, texture) / texture.shape[-2:].numel()).float()
        # float32: under float16 autocast the epsilon vanishes and sqrt's gradient at 0 turns into NaN
        pooled = F.normalize(torch.sign(pooled) * torch.sqrt(pooled.abs() + 1e-12), dim=-1)
        return pooled, torch.cat([pooled.flatten(1), deep.float().mean(dim=(2, 3))], dim=1)

    def features(self, x: Tensor) -> Tensor:
        return self._pooled(x)[1]

    def forward(self, x: Tensor) -> Tensor:
        if self.training and self.augment_prob > 0:
            x = self._erase_attended(x)
        pooled, feats = self._pooled(x)
        # only training moves the centres and needs the term; evaluation skips it
        self._independence = self.independence_weight * self._independence_loss(pooled) if self.training else None
        return self.head(self.dropout(feats)).squeeze(1)

    def loss(self, logits: Tensor, labels: Tensor) -> dict[str, Tensor]:
        terms = super().loss(logits, labels)
        if self._independence is not None:
            terms["independence"] = self._independence
            terms["loss"] = terms["loss"] + self._independence
            self._independence = None  # one forward, one loss
        return terms

    def _independence_loss(self, pooled: Tensor) -> Tensor:
        """The regional independence term of a training batch; moves the centres."""
        batch_centres = pooled.mean(dim=0)
        if not bool(self.centres_set):
            self.centres.copy_(batch_centres.detach())
            self.centres_set.fill_(True)
        # the batch's share of the moving centre stays differentiable, so the push term has a gradient
        centres = (1 - self.centre_momentum) * self.centres + self.centre_momentum * batch_centres
        pull = F.relu((pooled - centres).pow(2).sum(-1) - self.margin_in).mean(0).sum()
        apart = torch.cdist(centres, centres).pow(2)
        off_diagonal = ~torch.eye(len(centres), dtype=torch.bool, device=centres.device)
        push = F.relu(self.margin_out - apart[off_diagonal]).sum() / 2
        self.centres.copy_(centres.detach())
        return pull + push

    def _erase_attended(self, x: Tensor) -> Tensor:
        n = x.shape[0]
        chosen = torch.rand(n, device=x.device) < self.augment_prob
        if not bool(chosen.any()):
            return x
        with torch.no_grad():
            maps = self.attention(self.backbone(x)[1]).float()
            one = maps[torch.arange(n, device=x.device), torch.randint(maps.shape[1], (n,), device=x.device)]
            one = one / one.flatten(1).amax(1).clamp_min(1e-6)[:, None, None]
            low, high = self.erase_threshold
            threshold = torch.empty(n, 1, 1, device=x.device).uniform_(low, high)
            region = F.interpolate((one > threshold)[:, None].float(), size=x.shape[-2:], mode="nearest") > 0.5
        return x.masked_fill(region & chosen[:, None, None, None], 0.0)

    def cam_layer(self) -> tuple[str, nn.Module]:
        """The deepest EfficientNet stage: the features that are globally pooled."""
        name = self.backbone.feature_info.module_name()[-1]
        return f"backbone.{name}", self.backbone.get_submodule(name)

    def backbone_groups(self) -> list[list[nn.Parameter]]:
        # the attention and texture modules are new (not pretrained), so they are not here: they always train
        named = dict(self.backbone.named_parameters())
        return [[named[n] for n in names] for names in group_parameters(self.backbone, EFFICIENTNET_GROUPS).values()]
