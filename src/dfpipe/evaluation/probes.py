"""Frozen-backbone probes (the seed's approach 2): features from a frozen pretrained backbone, then classical
classifiers on them, optionally after a dimensionality reduction, with blur/jitter transforms at train and test.

Pieces, each usable alone:
- `BACKBONES` / `backbone_spec` / `build_backbone`: frozen feature extractors, each at its native input size
  unless its entry says otherwise (ViTs: their native size only). Offline: the ImageNet MobileNetV2 and
  EfficientNet-Lite0 that ship in registry packages (`dfpipe.models.weights`). Online or from a file (docs/WEIGHTS.md):
  CLIP ViT-B/16 (open_clip), DINO ViT-B/16 and DINO ResNet-50 (timm architectures).
- `extract_features`: one forward pass per crop in batches (eval, inference mode, channels_last).
- `shard_features` / `array_features`: features of one dataset × split × quality × transform, cached as
  `.npy` + a `.parquet` of sample metadata + a `.json` manifest; a second call with the same inputs reads the
  cache and never builds the backbone.
- `CLASSIFIERS`, `REDUCTIONS`, `TRANSFORMS`: the seed's twelve classifiers, none / PCA / autoencoder, and
  none / blur / jitter / both (p = 0.5 each).
- `probe_table`: backbone (or "a+b" concatenations) × reduction × classifier × train transform × test
  transform × train quality × test quality → ACC and balanced ACC (at the classifier's own decision and at a
  threshold chosen on the val split), AUC with a bootstrap interval and the val split's AUC;
  `write_probe_results` writes the CSV, markdown (its rows chosen by the val AUC, never a test metric) and the
  plot of classifier, backbone and test-transform effects.
- `concat` puts several backbones' features of the same samples side by side; `pool` stacks the samples of
  several datasets (training on their union).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import random
import warnings
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from dfpipe.config import schema_defaults
from dfpipe.data.augment import Augment
from dfpipe.evaluation.metrics import bootstrap_auc_ci, choose_threshold, video_weights, weighted_aucs
from dfpipe.io import atomic_path, write_csv, write_json, write_parquet
from dfpipe.models import weights as W

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
# default arguments below are the config schema's (probes section), so a call outside the workflow scores alike
_DEFAULTS = schema_defaults("probes")
META_COLUMNS = ["video_key", "method", "video_id", "frame_index", "label"]
WEIGHTS_HINT = (
    "give the weights as a file: `weights: /path/to/file.pth` in the backbone's entry "
    "(a state dict saved with torch.save, or .safetensors)"
)


# -- backbones ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackboneSpec:
    """A frozen feature extractor. `kind` "timm": `model` is a timm architecture built with num_classes=0;
    "open_clip": `model` is an open_clip architecture whose image tower gives the features.
    `weights`: "imagenet" (dfpipe.models.weights: timm hub, else the packaged offline file), "hub" (the timm
    pretrained tag in `model`, or open_clip's `pretrained_tag`), "none" (random), an http(s) URL (timm kinds),
    or a file path (docs/WEIGHTS.md: where each official file comes from).
    `input_size`: the side fed to the backbone; None = its native size (`native_input`). A fixed-size backbone
    (a ViT: position embeddings for one size) takes its native size only.
    `pretrained_tag`: for open_clip, which weights these are (the hub tag, or what a file holds): it sets the
    normalisation and the activation (OpenAI's CLIP uses QuickGELU)."""

    name: str
    model: str
    weights: str
    kind: str = "timm"
    input_size: int | None = None
    pretrained_tag: str | None = None


BACKBONES: dict[str, BackboneSpec] = {
    "mobilenetv2": BackboneSpec("mobilenetv2", "mobilenetv2_100", "imagenet"),
    "lite0": BackboneSpec("lite0", "tf_efficientnet_lite0", "imagenet"),
    # a file: OpenAI's ViT-B-16.pt (TorchScript) or open_clip's state dict of it
    "clip_vitb16": BackboneSpec("clip_vitb16", "ViT-B-16", "hub", kind="open_clip", pretrained_tag="openai"),
    # a file: DINO's dino_vitbase16_pretrain.pth (a plain state dict with timm's key names)
    "dino_vitb16": BackboneSpec("dino_vitb16", "vit_base_patch16_224.dino", "hub"),
    # DINO's ResNet-50 is a torchvision-layout ResNet-50 (the same keys as timm's resnet50); timm has no tag for it
    "dino_resnet50": BackboneSpec(
        "dino_resnet50",
        "resnet50",
        "https://dl.fbaipublicfiles.com/dino/dino_resnet50_pretrain/dino_resnet50_pretrain.pth",
    ),
}


def backbone_spec(
    name: str, overrides: Mapping[str, Any] | None = None, default_input_size: int | None = None
) -> BackboneSpec:
    """A known backbone, with `overrides` (e.g. {"weights": "/path/file.pth", "input_size": 128}); an unknown
    name needs at least `model` and `weights` in `overrides` (any timm model). `default_input_size` (the config's
    probes.input_size) applies to backbones that take any size (CNNs) without their own `input_size`; fixed-size
    ones (ViTs) keep their native size. An input size the backbone cannot take is refused here."""
    overrides = {k: v for k, v in dict(overrides or {}).items() if not (k == "input_size" and v is None)}
    allowed = {"model", "weights", "kind", "input_size", "pretrained_tag"}
    unknown = sorted(set(overrides) - allowed)
    if unknown:
        raise ValueError(f"backbone {name}: unknown keys {unknown}; allowed: {sorted(allowed)}")
    if "+" in name:
        raise ValueError(f"backbone {name!r}: '+' joins backbones in a probe list (concatenation); not a name")
    base = BACKBONES.get(name)
    if base is None:
        if "model" not in overrides or "weights" not in overrides:
            raise ValueError(
                f"backbone {name!r}: not one of {sorted(BACKBONES)}; give `model` (a timm name) and `weights` for it"
            )
        base = BackboneSpec(name, overrides["model"], overrides["weights"])
    spec = BackboneSpec(**{**asdict(base), **overrides, "name": name})
    if spec.kind not in ("timm", "open_clip"):
        raise ValueError(f"backbone {name}: kind {spec.kind!r}; allowed: timm, open_clip")
    if "input_size" not in overrides and default_input_size is not None and not native_input(spec)[1]:
        spec = BackboneSpec(**{**asdict(spec), "input_size": int(default_input_size)})
    input_config(spec)  # refuses a size the backbone cannot take, before any feature is extracted
    return spec


def _is_url(weights: str) -> bool:
    return weights.startswith(("http://", "https://"))


_DIGESTS: dict[tuple[str, int, int], str] = {}


def _file_sha256(path: Path) -> str:
    """A file's sha256, remembered per (path, size, mtime): a probe run asks for it once per feature set, and
    hashing a 600 MB CLIP file takes seconds."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]


def weights_id(spec: BackboneSpec) -> str:
    """What the weights are, for cache keys and manifests: the setting, or a file's name and content hash
    (never its absolute path)."""
    if spec.weights in ("imagenet", "hub", "none") or _is_url(spec.weights):
        return spec.weights if spec.weights != "hub" else f"hub:{spec.pretrained_tag or spec.model}"
    path = Path(spec.weights).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"backbone {spec.name}: weights file {path} does not exist; {WEIGHTS_HINT}")
    return f"file:{path.name}:sha256:{_file_sha256(path)[:16]}"


def _open_clip(spec: BackboneSpec) -> Any:
    try:
        import open_clip
    except ImportError as exn:
        raise ImportError(
            f"backbone {spec.name}: needs open_clip, which is not installed (open-clip-torch in "
            f"envs/requirements.txt: `make setup`, or `.venv/bin/pip install open_clip_torch -c envs/constraints.txt`); "
            f"or drop {spec.name} from the probe backbones"
        ) from exn
    if spec.model not in open_clip.list_models():
        raise ValueError(f"backbone {spec.name}: {spec.model!r} is not an open_clip model (open_clip.list_models())")
    return open_clip


def _clip_tag_cfg(spec: BackboneSpec) -> dict[str, Any]:
    """open_clip's pretrained config of the tag the weights are (normalisation, QuickGELU); {} without a tag."""
    return (
        dict(_open_clip(spec).get_pretrained_cfg(spec.model, spec.pretrained_tag) or {}) if spec.pretrained_tag else {}
    )


def native_input(spec: BackboneSpec) -> tuple[int, bool]:
    """(native input side, whether it is the only side the backbone takes) without building it: timm's
    pretrained config (`fixed_input_size` marks ViTs), open_clip's model config (every open_clip image tower
    has position embeddings for one size)."""
    if spec.kind == "open_clip":
        size = _open_clip(spec).get_model_config(spec.model)["vision_cfg"]["image_size"]
        return int(size if isinstance(size, int) else size[-1]), True
    import timm

    if not timm.is_model(spec.model):
        raise ValueError(f"backbone {spec.name}: {spec.model!r} is not a timm model (timm.list_models())")
    cfg = timm.models.get_pretrained_cfg(spec.model)
    if cfg is None:
        return 224, False
    return int(cfg.input_size[-1]), bool(cfg.fixed_input_size)


def input_config(spec: BackboneSpec) -> tuple[int, tuple[float, ...], tuple[float, ...]]:
    """(input size, mean, std) of a backbone without building it (the cache key needs the size)."""
    native, fixed = native_input(spec)
    size = spec.input_size or native
    if fixed and size != native:
        raise ValueError(
            f"backbone {spec.name}: input_size {size} does not fit {spec.model}, which takes {native} px only "
            f"(position embeddings); remove input_size from its probes.backbones entry (or set {native})"
        )
    if spec.kind == "open_clip":
        # OpenAI CLIP's normalisation (open_clip.constants.OPENAI_DATASET_MEAN/STD) unless the tag says otherwise
        cfg = _clip_tag_cfg(spec)
        mean = tuple(cfg.get("mean", (0.48145466, 0.4578275, 0.40821073)))
        std = tuple(cfg.get("std", (0.26862954, 0.26130258, 0.27577711)))
        return size, mean, std
    import timm

    cfg = timm.models.get_pretrained_cfg(spec.model)
    mean = tuple(cfg.mean) if cfg is not None else (0.485, 0.456, 0.406)
    std = tuple(cfg.std) if cfg is not None else (0.229, 0.224, 0.225)
    return int(size), mean, std


@dataclass
class Backbone:
    """A built, frozen backbone: `module(x)` maps a normalised N×3×S×S batch to N×D features."""

    spec: BackboneSpec
    module: nn.Module
    input_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    weights_source: str


def _url_state_dict(spec: BackboneSpec) -> W.StateDict:
    if not W.reachable(spec.weights):
        raise LookupError(
            f"backbone {spec.name}: weights at {spec.weights} are unreachable (offline?); download "
            f"the file elsewhere and {WEIGHTS_HINT}"
        )
    state = torch.hub.load_state_dict_from_url(spec.weights, map_location="cpu", weights_only=True)
    for key in ("model", "state_dict", "teacher"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    return dict(state)


class _Collect(logging.Handler):
    def __init__(self, lines: list[str]) -> None:
        super().__init__(logging.INFO)
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@contextlib.contextmanager
def _logged_by(logger: logging.Logger) -> Iterator[list[str]]:
    """The messages `logger` gives (INFO and up) while the block runs; they still reach the job's log."""
    lines: list[str] = []
    handler, level = _Collect(lines), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _timm_weights(spec: BackboneSpec) -> tuple[W.StateDict | None, str]:
    """(state dict, where it came from) for a timm backbone."""
    if spec.weights == "none":
        return None, "none (random initialisation)"
    if spec.weights in ("imagenet", "hub"):
        # dfpipe.models.weights logs where it found them; keep that line as the manifest's source
        try:
            with _logged_by(W.logger) as lines:
                state = W.imagenet(spec.model)
        except (LookupError, OSError, ValueError) as exn:
            raise LookupError(f"backbone {spec.name}: no weights for {spec.model} ({exn}); {WEIGHTS_HINT}") from exn
        source = lines[-1].split("<-", 1)[-1].strip() if lines else spec.weights
        source = "timm hub" if source.startswith("timm hub") else f"packaged file {Path(source.split(' (')[0]).name}"
        return state, source
    if _is_url(spec.weights):
        return _url_state_dict(spec), spec.weights
    source = weights_id(spec)  # first: a missing file is named with this module's hint
    return W.load_file(Path(spec.weights).expanduser()), source


def build_backbone(spec: BackboneSpec, device: str | torch.device = "cpu") -> Backbone:
    """The frozen backbone of `spec` on `device` (eval mode, no gradients, channels_last)."""
    size, mean, std = input_config(spec)
    try:
        if spec.kind == "open_clip":
            module, source = _build_open_clip(spec)
        else:
            import timm

            state, source = _timm_weights(spec)  # first: unreachable weights fail before a ViT-B is built
            module = timm.create_model(spec.model, num_classes=0, pretrained=False)
            if state is not None:
                W.load_into(module, state, f"{spec.name} ({source})")
    except (ValueError, OSError) as exn:  # dfpipe.models.weights words its hint for detectors' `pretrained:`
        raise type(exn)(str(exn).replace(W.FILE_HINT, WEIGHTS_HINT)) from exn
    module = module.eval().requires_grad_(False).to(device, memory_format=torch.channels_last)
    return Backbone(spec, module, size, mean, std, source)


_BUILT: dict[tuple, Backbone] = {}
# Backbones kept built: the seed's three (CLIP ViT-B/16, DINO ViT-B/16 and ResNet-50, ~0.8 GB together) are asked
# for in turn for each split, quality and transform, and rebuilding one (a 0.3-0.6 GB file read) costs seconds.
KEEP_BUILT = 3


def shared_backbone(spec: BackboneSpec, device: str | torch.device = "cpu") -> Backbone:
    """`build_backbone`, remembering the last KEEP_BUILT backbones built (least recently used goes first)."""
    key = (spec, weights_id(spec), str(device))
    if key in _BUILT:
        _BUILT[key] = _BUILT.pop(key)  # most recently used last
    else:
        while len(_BUILT) >= KEEP_BUILT:
            del _BUILT[next(iter(_BUILT))]
        _BUILT[key] = build_backbone(spec, device)
    return _BUILT[key]


def _clip_file_state(path: Path, name: str) -> W.StateDict:
    """The tensors of a CLIP weights file: a plain state dict (.pth/.bin/.safetensors, open_clip's layout, as
    open_clip saves it) or OpenAI's TorchScript archive (ViT-B-16.pt; torch.load(weights_only=True), which
    open_clip's `pretrained=PATH` uses, refuses those). The archive is read with torch.jit.load for its tensors
    only: its TorchScript methods are never called."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            scripted = any(n.rsplit("/", 1)[-1] == "constants.pkl" for n in zf.namelist())
        if scripted:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated in favour of torch.export
                try:
                    archive = torch.jit.load(str(path), map_location="cpu")
                except Exception as exn:  # TorchScript's errors have no common base class
                    raise ValueError(
                        f"backbone {name}: weights file {path}: not a readable TorchScript archive "
                        f"({type(exn).__name__}); {WEIGHTS_HINT}"
                    ) from exn
            return {k: v for k, v in archive.state_dict().items() if isinstance(v, Tensor)}
    return W.load_file(path)


def _build_open_clip(spec: BackboneSpec) -> tuple[nn.Module, str]:
    open_clip = _open_clip(spec)
    # QuickGELU where the weights were trained with it (OpenAI's): open_clip 3 only warns when a tag's activation
    # differs from the model config's, and knows nothing of a file's
    quick_gelu = bool(_clip_tag_cfg(spec).get("quick_gelu", False))
    if spec.weights in ("hub", "imagenet"):
        import huggingface_hub.constants as hf

        try:  # cache only when the hub does not answer (huggingface_hub would retry for ~50 s)
            with W.hf_offline(not W.reachable(hf.ENDPOINT)):
                model = open_clip.create_model(
                    spec.model, pretrained=spec.pretrained_tag or "openai", force_quick_gelu=quick_gelu
                )
        except Exception as exn:  # hub and network errors have no common base class
            raise LookupError(
                f"backbone {spec.name}: open_clip could not fetch {spec.model} "
                f"{spec.pretrained_tag} ({type(exn).__name__}); {WEIGHTS_HINT}"
            ) from exn
        return _ClipImage(model), f"open_clip hub {spec.pretrained_tag}"
    if _is_url(spec.weights):
        raise ValueError(
            f"backbone {spec.name}: kind open_clip takes weights hub (open_clip's pretrained tag), none or a file, "
            f"not a URL; download {spec.weights} and {WEIGHTS_HINT}"
        )
    source = "none (random initialisation)" if spec.weights == "none" else weights_id(spec)
    state = None if spec.weights == "none" else _clip_file_state(Path(spec.weights).expanduser(), spec.name)
    disabled = logging.root.manager.disable
    logging.disable(logging.WARNING)  # open_clip warns that the model it builds holds no weights yet
    try:
        model = open_clip.create_model(spec.model, pretrained=None, force_quick_gelu=quick_gelu)
    finally:
        logging.disable(disabled)
    if state is not None:
        # the image tower only (the features); every one of its tensors must be in the file, with its shape
        state = {k.removeprefix("module."): v for k, v in state.items()}
        visual = {k.removeprefix("visual."): v for k, v in state.items() if k.startswith("visual.")}
        W.load_into(model.visual, visual, f"{spec.name} ({source})")
    return _ClipImage(model), source


class _ClipImage(nn.Module):
    """open_clip's image tower as a feature extractor (the embedding the seed probes)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.visual = model.visual

    def forward(self, x: Tensor) -> Tensor:
        return self.visual(x)


# -- transforms --------------------------------------------------------------------------------------------

# The seed's four: p = 0.5 for each stage, as its "randomised jitter (p=0.5) and gaussian blur (p=0.5)".
TRANSFORMS: dict[str, Augment | None] = {
    "none": None,
    "blur": Augment(blur=0.5),
    "jitter": Augment(jitter=0.5),
    "both": Augment(blur=0.5, jitter=0.5),
}


def _transformer(transform: str, seed: int) -> Callable[[Tensor, int], Tensor] | None:
    """Per-image transform of uint8 3×H×W tensors; the draw depends on (seed, transform, sample number) only."""
    if transform not in TRANSFORMS:
        raise ValueError(f"transform {transform!r}: allowed {sorted(TRANSFORMS)}")
    augment = TRANSFORMS[transform]
    if augment is None:
        return None
    stages = augment.transform()

    def apply(image: Tensor, index: int) -> Tensor:
        return augment(image, random.Random(f"{seed}/{transform}/{index}"), stages)

    return apply


# -- feature extraction ------------------------------------------------------------------------------------


def normalise(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """uint8 N×3×H×W → float (x/255 - mean)/std, channels_last, on the images' device."""
    m = torch.tensor(mean, dtype=torch.float32, device=images.device).view(1, -1, 1, 1) * 255
    s = torch.tensor(std, dtype=torch.float32, device=images.device).view(1, -1, 1, 1) * 255
    return images.float().sub_(m).div_(s).contiguous(memory_format=torch.channels_last)


def extract_features(
    backbone: Backbone,
    batches: Iterable[Tensor],
    transform: str = "none",
    seed: int = 0,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """N×D float32 features of uint8 N×3×H×W batches (already at the backbone's input size), one forward
    pass per image. `transform` is applied to each image first, seeded by its place in the stream."""
    device = device or next(backbone.module.parameters()).device
    apply = _transformer(transform, seed)
    out, seen = [], 0
    with torch.inference_mode():
        for batch in batches:
            if apply is not None:
                batch = torch.stack([apply(img, seen + i) for i, img in enumerate(batch)])
            seen += len(batch)
            x = normalise(batch.to(device, non_blocking=True), backbone.mean, backbone.std)
            feats = backbone.module(x)
            out.append(feats.float().flatten(1).cpu().numpy())
    if not out:
        raise ValueError("extract_features: no images")
    return np.concatenate(out)


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


@dataclass
class FeatureSet:
    """Features (N×D float32) and one metadata row per sample (`META_COLUMNS`), same order."""

    features: np.ndarray
    meta: pd.DataFrame
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def labels(self) -> np.ndarray:
        return self.meta["label"].to_numpy(dtype=int)


Getter = Callable[[str, Any, str, str], FeatureSet]  # (backbone, quality, split, transform) -> features


def shards_fingerprint(shards: Sequence[Path]) -> str:
    """Identity of a shard set from the tar headers (the loader's index: every sample's shard, key, label and
    member sizes) and the index/counts files the shards stage writes beside them; no JPEG is read."""
    from dfpipe.data.loader import index_shards

    shards = [Path(s) for s in shards]
    digest = hashlib.sha256()
    for e in index_shards(shards):
        digest.update(f"{shards[e.shard].name}/{e.key}:{e.label}:{e.jpg[1]}:{e.json[1]}\n".encode())
    for folder in sorted({s.parent for s in shards}):
        for extra in sorted([*folder.glob("index.json"), *folder.glob("*.counts.json")]):
            digest.update(extra.name.encode() + b"\0" + extra.read_bytes())
    return digest.hexdigest()[:16]


def cache_paths(
    cache_dir: Path, dataset: str, backbone: str, quality: int | str, split: str, transform: str
) -> tuple[Path, Path, Path]:
    """(features .npy, metadata .parquet, manifest .json) of one cached feature set."""
    stem = Path(cache_dir) / dataset / backbone / f"q{quality}" / f"{split}-{transform}"
    return stem.with_suffix(".npy"), stem.with_suffix(".parquet"), stem.with_suffix(".json")


def _cached(cache_dir: Path, key: dict[str, Any]) -> FeatureSet | None:
    npy, meta, manifest = cache_paths(
        cache_dir, key["dataset"], key["backbone"], key["quality"], key["split"], key["transform"]
    )
    try:
        record = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return None
    if any(record.get(k) != v for k, v in key.items()):
        return None
    try:
        features = np.load(npy, allow_pickle=False)
        table = pd.read_parquet(meta)
    except (OSError, ValueError):
        return None
    if list(features.shape) != record.get("shape") or len(table) != features.shape[0]:
        return None
    return FeatureSet(features, table, record)


def _store(cache_dir: Path, key: dict[str, Any], fs: FeatureSet, backbone: Backbone) -> FeatureSet:
    npy, meta, manifest = cache_paths(
        cache_dir, key["dataset"], key["backbone"], key["quality"], key["split"], key["transform"]
    )
    with atomic_path(npy) as tmp, open(tmp, "wb") as f:
        np.save(f, fs.features.astype(np.float32), allow_pickle=False)
    write_parquet(meta, fs.meta[META_COLUMNS])
    record = {
        **key,
        "shape": list(fs.features.shape),
        "model": backbone.spec.model,
        "weights_source": backbone.weights_source,
    }
    write_json(manifest, record)  # last: a manifest only ever describes complete arrays
    fs.info = record
    return fs


def _cache_key(
    spec: BackboneSpec, dataset: str, quality: int | str, split: str, transform: str, seed: int, fingerprint: str
) -> dict[str, Any]:
    if transform not in TRANSFORMS:
        raise ValueError(f"transform {transform!r}: allowed {sorted(TRANSFORMS)}")
    size, _, _ = input_config(spec)
    return {
        "format": FORMAT_VERSION,
        "dataset": dataset,
        "backbone": spec.name,
        "kind": spec.kind,
        "weights": weights_id(spec),
        "input_size": size,
        "quality": quality,
        "split": split,
        "transform": transform,
        "seed": seed if transform != "none" else 0,
        "fingerprint": fingerprint,
    }


def shard_features(
    spec: BackboneSpec,
    shards: Sequence[Path],
    *,
    dataset: str,
    quality: int,
    split: str,
    cache_dir: Path,
    transform: str = "none",
    seed: int = 0,
    batch_size: int = _DEFAULTS["batch_size"],
    device: str = "cpu",
    num_workers: int = 0,
    builder: Callable[[BackboneSpec, str], Backbone] | None = None,
) -> FeatureSet:
    """Features of every sample of `shards` (one quality and split, in shard order), cached; see module doc."""
    from dfpipe.data.loader import ShardStream, make_loader

    key = _cache_key(spec, dataset, quality, split, transform, seed, shards_fingerprint(shards))
    hit = _cached(cache_dir, key)
    if hit is not None:
        return hit
    backbone = (builder or shared_backbone)(spec, device)
    stream = ShardStream(
        shards, batch_size=batch_size, input_size=backbone.input_size, train=False, quality=quality, split=split
    )
    metas: list[pd.DataFrame] = []

    def images() -> Iterator[Tensor]:
        for imgs, _, meta in make_loader(stream, num_workers=num_workers):
            metas.append(pd.DataFrame({c: meta[c] for c in META_COLUMNS}))
            yield imgs

    feats = extract_features(backbone, images(), transform, seed, device)
    meta = pd.concat(metas, ignore_index=True)
    meta["label"] = meta["label"].astype(int)
    return _store(cache_dir, key, FeatureSet(feats, meta), backbone)


def array_features(
    spec: BackboneSpec,
    images: np.ndarray,
    meta: pd.DataFrame,
    *,
    dataset: str,
    split: str,
    cache_dir: Path,
    quality: int | str = "na",
    transform: str = "none",
    seed: int = 0,
    batch_size: int = _DEFAULTS["batch_size"],
    device: str = "cpu",
    builder: Callable[[BackboneSpec, str], Backbone] | None = None,
) -> FeatureSet:
    """Features of RGB uint8 `images` (N×H×W×3) with metadata `meta` (needs `label`; other `META_COLUMNS`
    are filled from the row number when absent), cached; the fingerprint is a hash of the pixels and labels."""
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"array_features: need N×H×W×3 uint8 images, got {images.shape} {images.dtype}")
    if len(meta) != len(images) or "label" not in meta:
        raise ValueError(f"array_features: meta needs a `label` column and one row per image ({len(images)})")
    meta = meta.reset_index(drop=True).copy()
    for col, default in (
        ("video_id", meta.index.astype(str)),
        ("method", np.where(meta["label"] == 1, "fake", "original")),
        ("frame_index", 0),
    ):
        if col not in meta:
            meta[col] = default
    if "video_key" not in meta:
        meta["video_key"] = meta["method"].astype(str) + "/" + meta["video_id"].astype(str)
    meta["label"] = meta["label"].astype(int)
    digest = hashlib.sha256(np.ascontiguousarray(images).tobytes())
    digest.update(meta[META_COLUMNS].to_csv(index=False).encode())
    key = _cache_key(spec, dataset, quality, split, transform, seed, digest.hexdigest()[:16])
    hit = _cached(cache_dir, key)
    if hit is not None:
        return hit
    backbone = (builder or shared_backbone)(spec, device)
    batches = (resize_batch(images[a : a + batch_size], backbone.input_size) for a in range(0, len(images), batch_size))
    feats = extract_features(backbone, batches, transform, seed, device)
    return _store(cache_dir, key, FeatureSet(feats, meta[META_COLUMNS]), backbone)


def shard_getter(
    shards_dir: Path,
    *,
    dataset: str,
    cache_dir: Path,
    specs: Mapping[str, BackboneSpec],
    seed: int = 0,
    batch_size: int = _DEFAULTS["batch_size"],
    device: str = "cpu",
    num_workers: int = 0,
    train_shards: int | None = None,
) -> Getter:
    """A `probe_table` getter over `{shards_dir}/q{Q}/{split}-NNNN.tar`: (backbone, quality, split, transform)
    -> cached `shard_features` with the backbone's spec from `specs`. With `train_shards`, probes train on the
    first that many train shards only: a subsample of whole videos (what keeps the demo's probes short)."""

    def get(backbone: str, quality: Any, split: str, transform: str) -> FeatureSet:
        if backbone not in specs:
            raise KeyError(f"probes: backbone {backbone!r} is not configured; configured: {sorted(specs)}")
        shards = sorted((Path(shards_dir) / f"q{quality}").glob(f"{split}-*.tar"))
        if split == "train" and train_shards:
            shards = shards[:train_shards]
        if not shards:
            raise FileNotFoundError(
                f"{Path(shards_dir) / f'q{quality}'}: no {split} shards; build them first (`snakemake data`)"
            )
        return shard_features(
            specs[backbone],
            shards,
            dataset=dataset,
            quality=int(quality),
            split=split,
            cache_dir=cache_dir,
            transform=transform,
            seed=seed,
            batch_size=batch_size,
            device=device,
            num_workers=num_workers,
        )

    return get


def concat(sets: Sequence[FeatureSet]) -> FeatureSet:
    """Features of several backbones side by side (the seed's multi-backbone probes); the samples must be the
    same and in the same order."""
    if not sets:
        raise ValueError("concat: no feature sets")
    first = sets[0].meta[["video_key", "frame_index"]].reset_index(drop=True)
    for other in sets[1:]:
        if not first.equals(other.meta[["video_key", "frame_index"]].reset_index(drop=True)):
            raise ValueError(
                "concat: feature sets hold different samples (or another order); extract them from the same shards"
            )
    return FeatureSet(
        np.hstack([s.features for s in sets]),
        sets[0].meta,
        {"backbone": "+".join(str(s.info.get("backbone", "?")) for s in sets)},
    )


def pool(sets: Mapping[str, FeatureSet]) -> FeatureSet:
    """The samples of several datasets ({name: features of one backbone}) one after another: a union to train
    on. Each video key gets its dataset's name in front, so that two datasets' videos never count as one (a
    video weighs 1 in thresholds and AUCs). `info` names the datasets and their sample counts."""
    if not sets:
        raise ValueError("pool: no feature sets")
    dims = {name: s.features.shape[1] for name, s in sets.items()}
    if len(set(dims.values())) > 1:
        raise ValueError(f"pool: the datasets' features differ in width {dims}; pool one backbone's features")
    metas = []
    for name, s in sets.items():
        meta = s.meta[META_COLUMNS].reset_index(drop=True).copy()
        meta["video_key"] = f"{name}/" + meta["video_key"].astype(str)
        metas.append(meta)
    first = next(iter(sets.values()))
    return FeatureSet(
        np.vstack([s.features for s in sets.values()]),
        pd.concat(metas, ignore_index=True),
        {"backbone": first.info.get("backbone", "?"), "datasets": {n: len(s.meta) for n, s in sets.items()}},
    )


# -- reductions --------------------------------------------------------------------------------------------


class Reduction:
    """Standardise (train statistics), then reduce; fitted on the training features only."""

    def __init__(
        self, kind: str, components: int = _DEFAULTS["components"], seed: int = 0, epochs: int = _DEFAULTS["ae_epochs"]
    ) -> None:
        if kind not in REDUCTIONS:
            raise ValueError(f"reduction {kind!r}: allowed {list(REDUCTIONS)}")
        self.kind, self.components, self.seed, self.epochs = kind, components, seed, epochs

    def fit(self, x: np.ndarray) -> Reduction:
        self.mean = x.mean(0)
        std = x.std(0)
        # as StandardScaler: a feature (nearly) constant in training is centred, not blown up by a tiny std
        self.scale = np.where(std > 1e-6 * max(float(std.max()), 1e-12), std, 1.0)
        z = (x - self.mean) / self.scale
        k = max(1, min(self.components, z.shape[0] - 1, z.shape[1]))
        if self.kind == "pca":
            from sklearn.decomposition import PCA

            self.pca = PCA(n_components=k, random_state=self.seed).fit(z)
        elif self.kind == "autoencoder":
            self.encoder = _train_autoencoder(z.astype(np.float32), k, self.seed, self.epochs)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        z = ((x - self.mean) / self.scale).astype(np.float32)
        if self.kind == "pca":
            return self.pca.transform(z)
        if self.kind == "autoencoder":
            with torch.inference_mode():
                return self.encoder(torch.from_numpy(z)).numpy()
        return z


REDUCTIONS = ("none", "pca", "autoencoder")


def _train_autoencoder(z: np.ndarray, k: int, seed: int, epochs: int, hidden: int = 256) -> nn.Module:
    """A small MLP autoencoder (d → hidden → k → hidden → d, MSE, Adam) on CPU; returns the encoder.
    Seeded without touching torch's global generator."""
    d = z.shape[1]
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, k))
        decoder = nn.Sequential(nn.Linear(k, hidden), nn.ReLU(), nn.Linear(hidden, d))
    model = nn.Sequential(encoder, decoder)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-5)
    data = torch.from_numpy(z)
    batch = min(64, len(data))
    threads = torch.get_num_threads()
    # Steps this small gain nothing from threads, and on a busy machine contended threads made them ~15x slower.
    torch.set_num_threads(1)
    try:
        for _ in range(epochs):
            for ix in torch.randperm(len(data), generator=gen).split(batch):
                loss = nn.functional.mse_loss(model(data[ix]), data[ix])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    finally:
        torch.set_num_threads(threads)
    return encoder.eval()


# -- classifiers -------------------------------------------------------------------------------------------


def _classifiers() -> dict[str, Callable[[int], Any]]:
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis, QuadraticDiscriminantAnalysis
    from sklearn.ensemble import BaggingClassifier, HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.naive_bayes import GaussianNB
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.svm import SVC
    from sklearn.tree import DecisionTreeClassifier

    return {
        "bagging": lambda s: BaggingClassifier(random_state=s),
        "decision_tree": lambda s: DecisionTreeClassifier(random_state=s),
        "random_forest": lambda s: RandomForestClassifier(random_state=s),
        "lda": lambda s: LinearDiscriminantAnalysis(),
        # features outnumber samples in small sets: the class covariances need shrinkage (Ledoit-Wolf)
        "qda": lambda s: QuadraticDiscriminantAnalysis(solver="eigen", shrinkage="auto", tol=1e-9),
        "knn1": lambda s: KNeighborsClassifier(1),
        "knn3": lambda s: KNeighborsClassifier(3),
        "knn5": lambda s: KNeighborsClassifier(5),
        "linear_probe": lambda s: LogisticRegression(max_iter=2000),
        # no Platt scaling (probability=True fits 5 more SVMs): scored by decision_function
        "svm": lambda s: SVC(random_state=s),
        # scikit-learn's histogram gradient boosting: ~5x faster than GradientBoostingClassifier on raw 1280-d
        # backbone features (7 s against 35 s per fit on one core), so reduction "none" stays affordable
        "gradient_boosting": lambda s: HistGradientBoostingClassifier(random_state=s),
        "naive_bayes": lambda s: GaussianNB(),
    }


CLASSIFIERS = tuple(_classifiers())


def make_classifier(name: str, seed: int = 0) -> Any:
    factories = _classifiers()
    if name not in factories:
        raise ValueError(f"classifier {name!r}: allowed {list(factories)}")
    return factories[name](seed)


def fake_scores(clf: Any, x: np.ndarray) -> tuple[np.ndarray, str]:
    """Scores that rank samples by how fake (label 1) the classifier finds them, and which method gave them:
    `predict_proba` where the classifier has it, else `decision_function`."""
    classes = list(getattr(clf, "classes_", []))
    if hasattr(clf, "predict_proba"):
        return clf.predict_proba(x)[:, classes.index(1)], "predict_proba"
    if hasattr(clf, "decision_function"):
        d = np.asarray(clf.decision_function(x), dtype=float)
        return (d if classes[-1] == 1 else -d), "decision_function"
    raise TypeError(f"{type(clf).__name__} has neither predict_proba nor decision_function: no scores for an AUC")


# -- the probe table ---------------------------------------------------------------------------------------

PROBE_COLUMNS = [
    "backbone",
    "reduction",
    "classifier",
    "train_transform",
    "test_transform",
    "train_quality",
    "test_quality",
    "n",
    "n_pos",
    "n_neg",
    "acc",
    "bacc",
    "threshold_val",
    "acc_val",
    "bacc_val",
    "auc_val",
    "auc",
    "auc_lo",
    "auc_hi",
    "score_by",
    "error",
]


def _getter_with_concat(get: Getter) -> Getter:
    memo: dict[tuple, FeatureSet] = {}

    def fetch(backbone: str, quality: Any, split: str, transform: str) -> FeatureSet:
        key = (backbone, quality, split, transform)
        if key not in memo:
            parts = backbone.split("+")
            memo[key] = (
                get(parts[0], quality, split, transform)
                if len(parts) == 1
                else concat([fetch(p, quality, split, transform) for p in parts])
            )
        return memo[key]

    return fetch


def _accuracies(labels: np.ndarray, predicted: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """Accuracy and balanced accuracy (the mean of the per-class recalls; plain accuracy with one class, as
    binary_metrics) of `predicted`, every sample weighing `w`."""
    right = w * (np.asarray(predicted).astype(int) == labels)
    bacc = float(np.mean([right[labels == c].sum() / w[labels == c].sum() for c in np.unique(labels)]))
    return float(right.sum() / w.sum()), bacc


def evaluate_scores(
    labels: np.ndarray,
    scores: np.ndarray,
    predicted: np.ndarray,
    video_keys: np.ndarray,
    n_boot: int,
    seed: int,
    threshold: float | None = None,
) -> dict[str, Any]:
    """ACC and balanced ACC of the classifier's own decisions, and at the validation `threshold` on its scores
    (NaN without one), AUC of its scores with a bootstrap interval over videos, every video weighing 1
    (dfpipe.evaluation.metrics' module docstring). The AUC is metrics.weighted_aucs (what binary_metrics gives, tested
    equal): a table has thousands of rows, and binary_metrics' other metrics cost ten times more than these
    together."""
    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=float)
    w = video_weights(video_keys)
    single = len(np.unique(labels)) < 2
    auc = np.nan if single else float(weighted_aucs(labels, scores, w[None])[0])
    acc, bacc = _accuracies(labels, predicted, w)
    acc_val, bacc_val = (np.nan, np.nan) if threshold is None else _accuracies(labels, scores >= threshold, w)
    lo, hi = (
        (np.nan, np.nan)
        if single or not n_boot
        else bootstrap_auc_ci(labels, scores, n=n_boot, seed=seed, groups=video_keys, weights=w)
    )
    return {
        "n": int(labels.size),
        "n_pos": int((labels == 1).sum()),
        "n_neg": int((labels == 0).sum()),
        "acc": acc,
        "bacc": bacc,
        "threshold_val": np.nan if threshold is None else float(threshold),
        "acc_val": acc_val,
        "bacc_val": bacc_val,
        "auc": auc,
        "auc_lo": lo,
        "auc_hi": hi,
    }


def probe_table(
    get: Getter,
    *,
    backbones: Sequence[str],
    train_qualities: Sequence[Any],
    test_qualities: Sequence[Any],
    reductions: Sequence[str] = REDUCTIONS,
    classifiers: Sequence[str] = CLASSIFIERS,
    transforms: Sequence[str] = tuple(TRANSFORMS),
    test_transforms: Sequence[str] = ("none",),
    components: int = _DEFAULTS["components"],
    ae_epochs: int = _DEFAULTS["ae_epochs"],
    n_boot: int = _DEFAULTS["bootstrap"],
    seed: int = 0,
    test_get: Getter | None = None,
    blas_threads: int | None = 1,
) -> pd.DataFrame:
    """One row per backbone × reduction × classifier × train transform × test transform × train quality ×
    test quality (`PROBE_COLUMNS`). Trained on the "train" split of the train quality with the train transform,
    tested on the "test" split. ACC and balanced ACC are given at the classifier's own decision and at the
    threshold chosen on the untransformed "val" split of the training data (Youden's J, videos weighing alike,
    as the AUC table does), and `auc_val` is the AUC of the same val scores; NaN where the training data has no
    val split (`get` raises FileNotFoundError for it). `get` returns cached features; a backbone "a+b"
    concatenates a's and b's.
    `test_get` (default `get`) gives the test features: another dataset's for a cross-dataset table.

    A classifier that fails to fit or score keeps its row, with NaN metrics and the exception in `error`
    (and a log line): nothing is dropped silently.

    The fits run with `blas_threads` BLAS threads (None: the library's default). One is the default: these
    matrices are small, and on a busy 2-core machine contended BLAS threads made QDA's fit 7x and LDA's 30x
    slower; parallelism belongs to the jobs running several tables at once."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(blas_threads):
        return _probe_table(
            _getter_with_concat(get),
            _getter_with_concat(test_get or get),
            backbones,
            train_qualities,
            test_qualities,
            reductions,
            classifiers,
            transforms,
            test_transforms,
            components,
            ae_epochs,
            n_boot,
            seed,
        )


def _probe_table(
    get: Getter,
    test_get: Getter,
    backbones: Sequence[str],
    train_qualities: Sequence[Any],
    test_qualities: Sequence[Any],
    reductions: Sequence[str],
    classifiers: Sequence[str],
    transforms: Sequence[str],
    test_transforms: Sequence[str],
    components: int,
    ae_epochs: int,
    n_boot: int,
    seed: int,
) -> pd.DataFrame:
    rows = []
    for backbone in backbones:
        for tq in train_qualities:
            try:  # untransformed, as a detector's validation: the threshold is for the images as they come
                val = get(backbone, tq, "val", "none")
            except FileNotFoundError:  # a dataset without val shards: no threshold, no val AUC
                val = None
            for tt in transforms:
                train = get(backbone, tq, "train", tt)
                if len(np.unique(train.labels)) < 2:
                    raise ValueError(
                        f"probes: the train split of {backbone} q{tq} holds one label only; a probe "
                        "needs real and fake training samples"
                    )
                for red in reductions:
                    reducer = Reduction(red, components, seed, ae_epochs).fit(train.features)
                    x_train = reducer.transform(train.features)
                    x_val = None if val is None else (reducer.transform(val.features), val)
                    tests = {
                        (q, te): test_get(backbone, q, "test", te) for q in test_qualities for te in test_transforms
                    }
                    reduced = {k: reducer.transform(v.features) for k, v in tests.items()}
                    for name in classifiers:
                        base = {
                            "backbone": backbone,
                            "reduction": red,
                            "classifier": name,
                            "train_transform": tt,
                            "train_quality": tq,
                        }
                        rows += _classifier_rows(name, x_train, train.labels, x_val, tests, reduced, base, n_boot, seed)
    return pd.DataFrame(rows).reindex(columns=PROBE_COLUMNS)


def _classifier_rows(
    name: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: tuple[np.ndarray, FeatureSet] | None,
    tests: Mapping[tuple, FeatureSet],
    reduced: Mapping[tuple, np.ndarray],
    base: dict[str, Any],
    n_boot: int,
    seed: int,
) -> list[dict[str, Any]]:
    """One classifier fitted once (its threshold and val AUC from the reduced validation features `x_val` when
    given, never from a test set) and scored on every test set; a failure is kept in `error`, not dropped."""
    threshold, auc_val = None, np.nan
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # collinearity and convergence chatter
            clf = make_classifier(name, seed).fit(x_train, y_train)
            if x_val is not None:
                x, val = x_val
                w = video_weights(val.meta["video_key"].to_numpy())
                val_scores = fake_scores(clf, x)[0]
                threshold = choose_threshold(val.labels, val_scores, w)
                auc_val = float(weighted_aucs(val.labels, val_scores, w[None])[0])
        error = ""
    except Exception as exn:  # any estimator failure is reported in its rows
        clf, error = None, f"fit: {type(exn).__name__}: {exn}"
    rows = []
    for (q, te), fs in tests.items():
        row = {**base, "test_transform": te, "test_quality": q, "auc_val": auc_val, "score_by": "", "error": error}
        if clf is not None:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    scores, row["score_by"] = fake_scores(clf, reduced[(q, te)])
                    predicted = clf.predict(reduced[(q, te)])
                keys = fs.meta["video_key"].to_numpy()
                row.update(evaluate_scores(fs.labels, scores, predicted, keys, n_boot, seed, threshold))
            except Exception as exn:  # as above
                row["error"] = f"score: {type(exn).__name__}: {exn}"
        if row["error"]:
            logger.warning(
                f"probes: {base['backbone']}/{base['reduction']}/{name} train q{base['train_quality']} "
                f"{base['train_transform']}, test q{q} {te}: {row['error']}"
            )
        rows.append(row)
    return rows


def _transform_grid(table: pd.DataFrame) -> pd.DataFrame:
    """Mean test AUC per train transform (rows) × test transform (columns), over every other setting, in
    `TRANSFORMS` order."""
    grid = table.pivot_table(index="train_transform", columns="test_transform", values="auc", aggfunc="mean")
    order = [t for t in TRANSFORMS if t in grid.index] + [t for t in grid.index if t not in TRANSFORMS]
    cols = [t for t in TRANSFORMS if t in grid.columns] + [t for t in grid.columns if t not in TRANSFORMS]
    return grid.reindex(index=order, columns=cols)


def plot_probe_effects(table: pd.DataFrame, path: str | Path) -> None:
    """The seed's effect plots side by side: mean AUC per classifier (one bar per backbone) and per backbone
    (one bar per reduction) on untransformed test images, and a heat map of mean AUC per train transform ×
    test transform (the seed's "Inference 2": how a transform of the test images hurts, and whether training
    with it helps), each over every other setting."""
    from dfpipe.evaluation.tables import pyplot, save_figure

    plt = pyplot()
    sel = table[table["test_transform"] == "none"] if (table["test_transform"] == "none").any() else table
    grid = _transform_grid(table)
    fig, axes = plt.subplots(
        1,
        3,
        figsize=(13 + 0.9 * grid.shape[1], 4.5),
        gridspec_kw={"width_ratios": [3, 1.2, 0.5 + 0.45 * grid.shape[1]]},
    )
    for ax, (x, hue) in zip(axes, (("classifier", "backbone"), ("backbone", "reduction"))):
        means = sel.pivot_table(index=x, columns=hue, values="auc", aggfunc="mean")
        means = means.reindex([c for c in (CLASSIFIERS if x == "classifier" else means.index) if c in means.index])
        width = 0.8 / max(1, means.shape[1])
        pos = np.arange(len(means))
        for i, col in enumerate(means.columns):
            ax.bar(pos + i * width - 0.4 + width / 2, means[col].to_numpy(), width, label=str(col))
        ax.set_xticks(pos, means.index, rotation=35, ha="right")
        ax.set_ylabel("mean test AUC")
        ax.set_ylim(min(0.4, float(np.nanmin(means.to_numpy(), initial=1.0)) - 0.05), 1.0)
        ax.axhline(0.5, color="grey", lw=0.8, ls=":")
        ax.set_title(f"{x} effect")
        ax.legend(fontsize=7, title=hue, title_fontsize=7)
    ax = axes[2]
    ax.set_title("test transform effect\n(mean test AUC)")
    values = grid.to_numpy(dtype=float)
    if np.isfinite(values).any():
        # chance (0.5) red to perfect green, as the cross-dataset heat map; the numbers give the small effects
        im = ax.imshow(values, vmin=0.5, vmax=1.0, cmap="RdYlGn", aspect="auto")
        ax.set_xticks(range(grid.shape[1]), grid.columns, rotation=35, ha="right")
        ax.set_yticks(range(grid.shape[0]), grid.index)
        for (i, j), v in np.ndenumerate(values):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.3f}", ha="center", va="center", fontsize=9)
        ax.set_xlabel("test transform")
        ax.set_ylabel("train transform")
        fig.colorbar(im, ax=ax, fraction=0.08, pad=0.04)
    else:
        ax.axis("off")
        ax.text(0.5, 0.5, "no AUC", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    save_figure(fig, path)


def write_probe_results(table: pd.DataFrame, out_dir: str | Path, top: int = 20) -> list[Path]:
    """`probe_table.csv` (every row), `probe_table.md` (the `top` rows with metrics by validation AUC, then
    every failed row) and `probe_effects.png`.

    Nothing shown is chosen on test data: the rows are ranked by `auc_val` alone, ties (a probe has the same
    val AUC at every test quality and transform) and rows without a val split (last) kept in table order."""
    from dfpipe.evaluation.tables import to_markdown

    out_dir = Path(out_dir)
    write_csv(out_dir / "probe_table.csv", table)
    has_error = table["error"].fillna("") != ""
    failed, ok = table[has_error], table[~has_error]
    order = np.argsort(-ok["auc_val"].fillna(-np.inf).to_numpy(dtype=float), kind="stable")
    best = ok.iloc[order[:top]]
    cols = [c for c in PROBE_COLUMNS if c not in ("error", "n_pos", "n_neg")]
    text = f"# Probe table: best {len(best)} of {len(table)} rows by validation AUC (auc_val)\n\n" + to_markdown(
        best[cols]
    )
    if len(failed):
        text += f"\n## {len(failed)} rows without metrics\n\n" + to_markdown(
            failed[
                [
                    "backbone",
                    "reduction",
                    "classifier",
                    "train_transform",
                    "test_transform",
                    "train_quality",
                    "test_quality",
                    "error",
                ]
            ]
        )
    with atomic_path(out_dir / "probe_table.md") as tmp:
        tmp.write_text(text)
    plot_probe_effects(table, out_dir / "probe_effects.png")
    return [out_dir / "probe_table.csv", out_dir / "probe_table.md", out_dir / "probe_effects.png"]
