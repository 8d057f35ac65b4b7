"""The probe backbones as specs: the registry of known ones, a spec from a config entry, the input size and
normalisation each takes and what its weights are, all without building one (`dfpipe.evaluation.probes.build`
builds them)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import timm

WEIGHTS_HINT = (
    "give the weights as a file: `weights: /path/to/file.pth` in the backbone's entry "
    "(a state dict saved with torch.save, or .safetensors)"
)


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


def is_url(weights: str) -> bool:
    return weights.startswith(("http://", "https://"))


_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
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
    if spec.weights in ("imagenet", "hub", "none") or is_url(spec.weights):
        return spec.weights if spec.weights != "hub" else f"hub:{spec.pretrained_tag or spec.model}"
    path = Path(spec.weights).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"backbone {spec.name}: weights file {path} does not exist; {WEIGHTS_HINT}")
    return f"file:{path.name}:sha256:{file_sha256(path)[:16]}"


def open_clip_module(spec: BackboneSpec) -> Any:
    """The open_clip package, for a backbone of kind open_clip; it is optional, so loaded only here."""
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


def clip_tag_config(spec: BackboneSpec) -> dict[str, Any]:
    """open_clip's pretrained config of the tag the weights are (normalisation, QuickGELU); {} without a tag."""
    if not spec.pretrained_tag:
        return {}
    return dict(open_clip_module(spec).get_pretrained_cfg(spec.model, spec.pretrained_tag) or {})


def native_input(spec: BackboneSpec) -> tuple[int, bool]:
    """(native input side, whether it is the only side the backbone takes) without building it: timm's
    pretrained config (`fixed_input_size` marks ViTs), open_clip's model config (every open_clip image tower
    has position embeddings for one size)."""
    if spec.kind == "open_clip":
        size = open_clip_module(spec).get_model_config(spec.model)["vision_cfg"]["image_size"]
        return int(size if isinstance(size, int) else size[-1]), True
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
        cfg = clip_tag_config(spec)
        mean = tuple(cfg.get("mean", (0.48145466, 0.4578275, 0.40821073)))
        std = tuple(cfg.get("std", (0.26862954, 0.26130258, 0.27577711)))
        return size, mean, std
    cfg = timm.models.get_pretrained_cfg(spec.model)
    mean = tuple(cfg.mean) if cfg is not None else (0.485, 0.456, 0.406)
    std = tuple(cfg.std) if cfg is not None else (0.229, 0.224, 0.225)
    return int(size), mean, std
