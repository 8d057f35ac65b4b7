"""Grad-CAM heatmaps of a detector's decision (pytorch-grad-cam), and the grid figure of a trained model.

The target layer is chosen by each detector family (`Detector.cam_layer`), never by the user:
  Meso-4 / MesoInception-4   the last conv block's feature maps (its BatchNorm, before the final pool)
  timm backbones             the module whose output global pooling reduces (EfficientNet / MobileNetV2:
                             `bn2` after the 1×1 head conv; MobileNetV1, which has no head conv: `blocks`;
                             ResNet: `layer4`); models without a pooling child: the last entry of timm's
                             `feature_info`
  multi_attention            the deepest EfficientNet stage (the globally pooled features); its attention
                             maps are shown as a second panel
  anything else              the last Conv2d / norm layer of the backbone
Heatmaps explain the predicted class at the given threshold: the fake logit for a "fake" decision, its
negative for "real". pytorch-grad-cam scales each map to 0..1 per image, so maps show where, not how much.

`grid_figure` lays out the most confident reals, the most confident fakes and the worst errors with
overlays and scores under one caption line; `grid_from_predictions` picks them from a model's scores of
evaluation shards (the predict rule's table) and reads back only those crops.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import BinaryClassifierOutputTarget
from torch import nn

from dfpipe.data.loader import make_loader, normalize
from dfpipe.data.shards import sample_key
from dfpipe.evaluation.metrics import read_predictions
from dfpipe.evaluation.predict import eval_stream, pick_device
from dfpipe.figures import pyplot, save_figure
from dfpipe.models.detectors.multi_attention import MultiAttention
from dfpipe.models.modelfile import FROM_FILE, load_model

GROUPS = ("most confident real", "most confident fake", "worst errors")


def target_layer(detector: nn.Module) -> tuple[str, nn.Module]:
    """(name, module) of the layer Grad-CAM reads for this detector: its own choice (`Detector.cam_layer`)."""
    return detector.cam_layer()


def _as_batch(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 N×3×H×W tensor from N×H×W×3 arrays (or such a tensor as is)."""
    if isinstance(images, np.ndarray):
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"Grad-CAM: expected N×H×W×3 uint8 images, got {images.shape} {images.dtype}")
        return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    return images


def heatmaps(
    detector: nn.Module, images: np.ndarray | torch.Tensor, fake: Sequence[bool], batch_size: int = 16
) -> tuple[np.ndarray, np.ndarray | None]:
    """Grad-CAM maps (N×H×W float32 in 0..1, the input size) of uint8 RGB `images` at the detector's input
    size, each explaining its `fake` decision; plus the mean attention map of a multi-attention detector
    (N×H×W, 0..1), else None."""
    batch = _as_batch(images)
    device = next(detector.parameters()).device
    was_training = detector.training
    _, layer = target_layer(detector)
    attention: list[np.ndarray] = []
    hook = None
    if isinstance(detector, MultiAttention):

        def keep(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
            maps = output.detach().float().mean(1, keepdim=True)
            maps = torch.nn.functional.interpolate(maps, size=batch.shape[-2:], mode="bilinear", align_corners=False)
            flat = maps.flatten(1)
            lo, hi = flat.amin(1)[:, None, None, None], flat.amax(1)[:, None, None, None]
            attention.append(((maps - lo) / (hi - lo).clamp_min(1e-12))[:, 0].cpu().numpy())

        hook = detector.attention.register_forward_hook(keep)
    cams = []
    try:
        with GradCAM(model=detector, target_layers=[layer]) as cam:
            for start in range(0, len(batch), batch_size):
                part = normalize(batch[start : start + batch_size].to(device), detector.mean, detector.std)
                # Gradients to the input make every activation carry one, also where the layers up to the target
                # are frozen (`unfreeze_last: 0`, the head alone): else the target layer's output has no gradient.
                part.requires_grad_(True)
                targets = [BinaryClassifierOutputTarget(int(bool(f))) for f in fake[start : start + batch_size]]
                attention_before = len(attention)
                cams.append(np.asarray(cam(input_tensor=part, targets=targets), np.float32))
                del attention[attention_before + 1 :]  # one forward per batch is the one Grad-CAM explains
    finally:
        if hook is not None:
            hook.remove()
        detector.train(was_training)
    out = np.concatenate(cams) if cams else np.zeros((0, *batch.shape[-2:]), np.float32)
    return out, (np.concatenate(attention).astype(np.float32) if attention else None)


def overlay(image: np.ndarray, cam: np.ndarray, weight: float = 0.55) -> np.ndarray:
    """uint8 RGB image with `cam` (H×W, 0..1, resized to the image) blended on as a JET colour map."""
    if cam.shape != image.shape[:2]:
        cam = cv2.resize(cam, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
    colour = cv2.cvtColor(cv2.applyColorMap(np.uint8(np.clip(cam, 0, 1) * 255), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    return np.clip(weight * image.astype(np.float32) + (1 - weight) * colour, 0, 255).astype(np.uint8)


def pick_examples(labels: np.ndarray, scores: np.ndarray, threshold: float, k: int) -> dict[str, list[int]]:
    """Indices per group of GROUPS, at most `k` each: correct reals with the lowest scores, correct fakes with
    the highest, and the misclassified samples furthest on the wrong side of `threshold`."""
    labels, scores = np.asarray(labels).astype(int), np.asarray(scores, dtype=float)
    fake = scores >= threshold
    idx = np.arange(len(scores))
    real_ok = idx[(labels == 0) & ~fake]
    fake_ok = idx[(labels == 1) & fake]
    wrong = idx[(labels == 1) != fake]
    # stable sorts: equal scores keep their order, so the grid does not depend on the sort's tie-breaking
    return {
        GROUPS[0]: real_ok[np.argsort(scores[real_ok], kind="stable")][:k].tolist(),
        GROUPS[1]: fake_ok[np.argsort(-scores[fake_ok], kind="stable")][:k].tolist(),
        GROUPS[2]: wrong[np.argsort(-np.abs(scores[wrong] - threshold), kind="stable")][:k].tolist(),
    }


CAPTION_PT = 9.0  # the grid's caption; wrapped rather than shrunk, so it stays legible in the report


def _caption_lines(caption: str, width_in: float, fontsize: float) -> list[str]:
    """`caption` broken into lines that fit `width_in` inches at `fontsize` points (~0.55 em a character,
    a margin kept): at its " · " separators where a part fits, else at spaces."""
    fits = max(20, int((width_in - 0.3) * 72 / (0.55 * fontsize)))
    lines: list[str] = []
    for part in caption.split(" · "):
        if lines and len(lines[-1]) + 3 + len(part) <= fits:
            lines[-1] += " · " + part
        else:
            lines.extend(textwrap.wrap(part, fits) or [""])
    return lines


def grid_figure(
    out_path: Path,
    images: np.ndarray,
    labels: np.ndarray,
    scores: np.ndarray,
    cams: np.ndarray,
    groups: dict[str, list[int]],
    caption: str,
    attention: np.ndarray | None = None,
) -> Path:
    """Write a PNG: one row per group (its name on the left), one tile per example (the overlay, and the
    attention overlay beside it when given), each titled with its label and score; `caption` on top, wrapped
    to the figure's width (`_caption_lines`) at a fixed size, so nothing is cut however few tiles there are."""
    plt = pyplot()
    panels = 2 if attention is not None else 1
    k = max(1, max((len(v) for v in groups.values()), default=1))
    rows = len(groups)
    # at least ~5 in wide: room for the caption lines however few tiles there are
    width = max(5.0, 0.4 + 1.9 * k * panels)
    lines = _caption_lines(caption, width, CAPTION_PT)
    fig, axes = plt.subplots(
        rows,
        k * panels,
        figsize=(width, 2.2 * rows + 0.2 * len(lines) + 0.2),
        squeeze=False,
        layout="constrained",
    )
    for r, (group, indices) in enumerate(groups.items()):
        for c in range(k * panels):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c == 0:
                ax.set_ylabel(group, fontsize=9)
            if c // panels >= len(indices):
                if c == 0:
                    ax.text(0.5, 0.5, "none", ha="center", va="center", fontsize=9, transform=ax.transAxes)
                continue
            i = indices[c // panels]
            if c % panels == 0:
                ax.imshow(overlay(images[i], cams[i]))
                ax.set_title(f"{'fake' if labels[i] else 'real'} · score {scores[i]:.3f}", fontsize=8)
            else:
                ax.imshow(overlay(images[i], attention[i]))
                ax.set_title("attention maps", fontsize=8)
    fig.suptitle("\n".join(lines), fontsize=CAPTION_PT)
    save_figure(fig, out_path, dpi=100)
    return Path(out_path)


def gradcam_grid(
    detector: nn.Module,
    out_path: Path,
    images: np.ndarray,
    labels: Sequence[int],
    scores: Sequence[float],
    caption: str,
    threshold: float = 0.5,
    k: int = 4,
) -> Path:
    """Pick the examples (`pick_examples`) among uint8 N×H×W×3 crops at the detector's input size with their
    labels and scores, compute their heatmaps and write the grid (`grid_figure`) to `out_path`."""
    labels, scores = np.asarray(labels).astype(int), np.asarray(scores, dtype=float)
    groups = pick_examples(labels, scores, threshold, k)
    chosen = sorted({i for v in groups.values() for i in v})
    where = {i: n for n, i in enumerate(chosen)}
    sub = np.asarray(images)[chosen] if chosen else np.zeros((0, *np.asarray(images).shape[1:]), np.uint8)
    cams, attention = heatmaps(detector, sub, [scores[i] >= threshold for i in chosen])
    remapped = {g: [where[i] for i in v] for g, v in groups.items()}
    layer, _ = target_layer(detector)
    line = f"{caption} · Grad-CAM on {layer} for the decision at threshold {threshold:.3f}"
    return grid_figure(out_path, sub, labels[chosen], scores[chosen], cams, remapped, line, attention)


def crops_of(
    detector: nn.Module, shards: Sequence[Path], keys: Sequence[tuple[str, int]], batch_size: int = 64
) -> np.ndarray:
    """The uint8 N×H×W×3 crops (at the detector's input size, through its ELA when it has one) of the samples
    `keys` ((video_key, frame_index) pairs) of evaluation shards, in the order of `keys`. Only those samples
    are read and decoded (located by their shard keys); nothing is scored."""
    wanted = {key: n for n, key in enumerate(keys)}
    # video keys are {method}/q{quality}/{video_id} (dfpipe.data.shards), the samples' keys {method}-{video_id}-{frame}
    names = {sample_key(v.split("/", 1)[0], v.rsplit("/", 1)[-1], f) for v, f in keys}
    found: dict[int, np.ndarray] = {}
    for images, _labels, meta in make_loader(eval_stream(detector, shards, batch_size, samples=names), 0):
        for i, key in enumerate(zip(meta["video_key"], map(int, meta["frame_index"]), strict=True)):
            if key in wanted:
                found[wanted[key]] = images[i].permute(1, 2, 0).numpy()
        if len(found) == len(wanted):
            break
    missing = [keys[n] for n in range(len(keys)) if n not in found]
    if missing:
        raise ValueError(
            f"Grad-CAM: {', '.join(map(str, shards))} hold no sample {missing[0]} of the predictions "
            f"({len(missing)} missing): the predictions are older than the shards; rerun snakemake"
        )
    return np.stack([found[n] for n in range(len(keys))]) if keys else np.zeros((0, 1, 1, 3), np.uint8)


def grid_from_predictions(
    detector: nn.Module,
    shards: Sequence[Path],
    predictions: pd.DataFrame,
    out_path: Path,
    caption: str,
    threshold: float = 0.5,
    k: int = 4,
    device: str = "auto",
) -> Path:
    """The Grad-CAM grid of a detector on evaluation shards, its examples picked from the detector's scores of
    those shards (`predictions`: video_key, frame_index, label, score per sample, as the predict rule writes
    them): only the <= 3·k crops picked are read back and explained, nothing is scored again."""
    if predictions.empty:
        raise ValueError(f"Grad-CAM grid: no predictions for {', '.join(map(str, shards))}")
    labels, scores = predictions["label"].to_numpy(int), predictions["score"].to_numpy(float)
    chosen = sorted({i for v in pick_examples(labels, scores, threshold, k).values() for i in v})
    keys = [(str(predictions["video_key"].iloc[i]), int(predictions["frame_index"].iloc[i])) for i in chosen]
    detector = detector.to(pick_device(device)).eval()
    images = crops_of(detector, shards, keys)
    return gradcam_grid(detector, out_path, images, labels[chosen], scores[chosen], caption, threshold, k)


def model_grids(
    model_path: Path,
    test_shards: dict[int, Sequence[Path]],
    predictions: Path,
    out_paths: dict[int, Path],
    train_quality: int,
    k: int = 3,
    device: str = "auto",
) -> list[Path]:
    """The Grad-CAM grid of one trained model (the workflow's best.pt) on the test shards of each quality,
    written to `out_paths[quality]`. The model comes from the file alone, as predict loads it (its spec, ELA and
    threshold: the one chosen on validation stored in the file, else 0.5); the examples are
    picked from its test scores in `predictions` (the predict rule's table), so each quality costs reading its
    test shards back plus Grad-CAM on the <= 3·k crops picked."""
    if set(test_shards) != set(out_paths):
        raise ValueError(
            f"Grad-CAM grids: test shards of qualities {sorted(test_shards)} but outputs for "
            f"{sorted(out_paths)}; give one output per test quality"
        )
    scores = read_predictions([predictions])
    scores = scores[scores["split"] == "test"]
    model = load_model(Path(model_path), "cpu")
    detector = model.detector
    detector.ela = model.ela  # the evaluation stream applies it (files without a spec carry it on their own)
    ela = f", ELA q{model.ela.quality}" if model.ela else ""
    # the trainer stores the threshold it chose on validation in the file; older files decide at 0.5
    source = "validation" if model.threshold_source == FROM_FILE else "default"
    return [
        grid_from_predictions(
            detector,
            test_shards[q],
            scores[scores["test_quality"] == q],
            out_paths[q],
            f"{model.name} trained at q{train_quality}{ela}, test q{q}, {source} threshold",
            threshold=model.threshold,
            k=k,
            device=device,
        )
        for q in sorted(out_paths, reverse=True)
    ]
