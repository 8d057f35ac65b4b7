"""The images a probe backbone sees: the train/test transforms (blur, colour jitter), resizing to the backbone's
input size and its normalisation."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from dfpipe.data.augment import Augment

# The seed's four: p = 0.5 for each stage, as its "randomised jitter (p=0.5) and gaussian blur (p=0.5)".
TRANSFORMS: dict[str, Augment | None] = {
    "none": None,
    "blur": Augment(blur=0.5),
    "jitter": Augment(jitter=0.5),
    "both": Augment(blur=0.5, jitter=0.5),
}


def check_transform(transform: str) -> None:
    if transform not in TRANSFORMS:
        raise ValueError(f"transform {transform!r}: allowed {sorted(TRANSFORMS)}")


def transformer(transform: str, seed: int) -> Callable[[Tensor, int], Tensor] | None:
    """Per-image transform of uint8 3×H×W tensors; the draw depends on (seed, transform, sample number) only.
    None for "none"."""
    check_transform(transform)
    augment = TRANSFORMS[transform]
    if augment is None:
        return None
    stages = augment.transform()

    def apply(image: Tensor, index: int) -> Tensor:
        return augment(image, random.Random(f"{seed}/{transform}/{index}"), stages)

    return apply


def normalise(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """uint8 N×3×H×W → float (x/255 - mean)/std, channels_last, on the images' device."""
    m = torch.tensor(mean, dtype=torch.float32, device=images.device).view(1, -1, 1, 1) * 255
    s = torch.tensor(std, dtype=torch.float32, device=images.device).view(1, -1, 1, 1) * 255
    return images.float().sub_(m).div_(s).contiguous(memory_format=torch.channels_last)


def resize_batch(images: np.ndarray, size: int) -> Tensor:
    """N×H×W×3 uint8 → uint8 N×3×size×size (bilinear with antialias, as the shard loader's resize)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    if x.shape[-2:] != (size, size):
        x = (
            torch.nn.functional.interpolate(
                x.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False
            )
            .round_()
            .clamp_(0, 255)
            .to(torch.uint8)
        )
    return x
