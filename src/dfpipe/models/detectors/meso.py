"""Meso-4 and MesoInception-4 (Afchar et al., "MesoNet", WIFS 2018), written from the paper's description.

Meso-4: four conv blocks (8, 8, 16, 16 filters; 3×3, 5×5, 5×5, 5×5; ReLU, BatchNorm, max-pool 2, 2, 2, 4), then
dropout, dense 16 (LeakyReLU 0.1), dropout and one output: 27,977 trainable parameters at 256×256, as the
paper counts (BatchNorm scale and shift; its running statistics are buffers here). MesoInception-4 replaces
the first two blocks by inception modules whose branches are 1×1, 3×3 and 3×3 dilated by 2 and 3.
The last pool is adaptive to 8×8 — exactly the paper's max-pool 4 at 256 px — so smaller inputs work too.

Dropout: the paper has two, 0.5 each, before the dense layer and before the output. `dropout` sets them: None
gives the paper's 0.5 at both, a number sets both, a pair [before dense, before output] sets each (e.g. the
demo's [0.5, 0.0], the network it trained while the first was fixed at 0.5).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from dfpipe.models.detectors.base import HALF, Detector

PAPER_INPUT = 256
PAPER_DROPOUT = 0.5
DENSE = 16


def dropouts(dropout: float | Sequence[float] | None) -> tuple[float, float]:
    """(before the dense layer, before the output) from a Meso net's `dropout` (module docstring)."""
    if dropout is None:
        return PAPER_DROPOUT, PAPER_DROPOUT
    if isinstance(dropout, int | float) and not isinstance(dropout, bool):
        return float(dropout), float(dropout)
    if isinstance(dropout, Sequence) and not isinstance(dropout, str) and len(dropout) == 2:
        return float(dropout[0]), float(dropout[1])
    raise ValueError(f"dropout: {dropout!r}; give a rate, or two rates [before the dense layer, before the output]")


def _conv_block(c_in: int, c_out: int, kernel: int, pool: nn.Module) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2), nn.ReLU(inplace=True), nn.BatchNorm2d(c_out), pool
    )


class Inception(nn.Module):
    """Four parallel branches concatenated: 1×1; 1×1→3×3; 1×1→3×3 dilation 2; 1×1→3×3 dilation 3."""

    def __init__(self, c_in: int, a: int, b: int, c: int, d: int) -> None:
        super().__init__()

        def branch(width: int, dilation: int | None) -> nn.Sequential:
            layers: list[nn.Module] = [nn.Conv2d(c_in, width, 1), nn.ReLU(inplace=True)]
            if dilation is not None:
                layers += [nn.Conv2d(width, width, 3, padding=dilation, dilation=dilation), nn.ReLU(inplace=True)]
            return nn.Sequential(*layers)

        self.branches = nn.ModuleList([branch(a, None), branch(b, 1), branch(c, 2), branch(d, 3)])
        self.out_channels = a + b + c + d

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([branch(x) for branch in self.branches], dim=1)


def _inception_block(c_in: int, widths: tuple[int, int, int, int]) -> nn.Sequential:
    inception = Inception(c_in, *widths)
    return nn.Sequential(inception, nn.BatchNorm2d(inception.out_channels), nn.MaxPool2d(2))


def _dense(dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(16 * 8 * 8, DENSE), nn.LeakyReLU(0.1))


class _Meso(Detector):
    def __init__(
        self, blocks: list[nn.Module], *, input_size: int | None, dropout: float | Sequence[float] | None
    ) -> None:
        dense, output = dropouts(dropout)
        super().__init__(
            nn.Sequential(*blocks, _dense(dense)),
            DENSE,
            input_size=input_size or PAPER_INPUT,
            mean=HALF,
            std=HALF,
            dropout=output,
        )

    def features(self, x: Tensor) -> Tensor:
        return self.backbone(x)

    def backbone_groups(self) -> list[list[nn.Parameter]]:
        return [list(block.parameters()) for block in self.backbone]

    def cam_layer(self) -> tuple[str, nn.Module]:
        """The last conv block's BatchNorm: its feature maps before the final pool (the dense part follows)."""
        block = len(self.backbone) - 2
        return f"backbone.{block}.2", self.backbone[block][2]


class Meso4(_Meso):
    weights_name = "meso4"

    def __init__(self, *, input_size: int | None = None, dropout: float | Sequence[float] | None = None) -> None:
        blocks = [
            _conv_block(3, 8, 3, nn.MaxPool2d(2)),
            _conv_block(8, 8, 5, nn.MaxPool2d(2)),
            _conv_block(8, 16, 5, nn.MaxPool2d(2)),
            _conv_block(16, 16, 5, nn.AdaptiveMaxPool2d(8)),
        ]
        super().__init__(blocks, input_size=input_size, dropout=dropout)


class MesoInception4(_Meso):
    weights_name = "mesoinception4"

    def __init__(self, *, input_size: int | None = None, dropout: float | Sequence[float] | None = None) -> None:
        first = _inception_block(3, (1, 4, 4, 2))
        second = _inception_block(first[0].out_channels, (2, 4, 4, 2))
        blocks = [
            first,
            second,
            _conv_block(second[0].out_channels, 16, 5, nn.MaxPool2d(2)),
            _conv_block(16, 16, 5, nn.AdaptiveMaxPool2d(8)),
        ]
        super().__init__(blocks, input_size=input_size, dropout=dropout)
