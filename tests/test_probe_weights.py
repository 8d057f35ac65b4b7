"""The paper's probe backbones from weight files in the layouts of their official checkpoints, offline: each
architecture with random weights saved as the official file is laid out (docs/WEIGHTS.md), then features through
the probe stage's `weights: FILE` path (`backbone_spec` + `array_features`, as scripts/probes.py), at the native
224 px. The features must be those of the saved model, the same on a second extraction (the file loaded afresh),
and cached under the file's name and sha256."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import timm
import torch
import torchvision
from conftest import torchscript_archive
from skimage import data
from torch import nn

from dfpipe.evaluation import probes

N = 3  # crops: a few keep three ViT-B passes affordable on 2 cores


@pytest.fixture(scope="module")
def crops() -> tuple[np.ndarray, pd.DataFrame]:
    """Three 160² crops of scikit-image's astronaut photo (face, badge, flag) with labels."""
    photo = data.astronaut()
    images = np.stack([photo[y : y + 160, x : x + 160] for y, x in ((20, 150), (250, 240), (10, 10))])
    return images, pd.DataFrame({"label": [0, 1, 0]})


def _reference(module: nn.Module, images: np.ndarray, spec: probes.BackboneSpec) -> np.ndarray:
    """The in-memory model's features of the crops, prepared as the probe stage prepares them."""
    size, mean, std = probes.input_config(spec)
    with torch.inference_mode():
        return module.eval()(probes.normalise(probes.resize_batch(images, size), mean, std)).numpy()


def _extract_twice(spec: probes.BackboneSpec, crops, cache: Path, dim: int) -> probes.FeatureSet:
    """Features through `array_features` into two caches, the backbone built from the file each time; both the
    same, of shape N×dim float32, and cached under the file's name and sha256 at 224 px."""
    images, meta = crops
    runs = []
    for part in ("a", "b"):
        probes.BUILT.clear()  # the second extraction loads the file again
        runs.append(
            probes.array_features(spec, images, meta, dataset="astronaut", split="test", cache_dir=cache / part)
        )
    probes.BUILT.clear()
    first, second = runs
    assert first.features.shape == (N, dim) and first.features.dtype == np.float32
    assert np.isfinite(first.features).all()
    np.testing.assert_array_equal(first.features, second.features)
    path = Path(spec.weights)
    with open(path, "rb") as f:
        sha = hashlib.file_digest(f, "sha256").hexdigest()
    manifest = json.loads(probes.cache_paths(cache / "a", "astronaut", spec.name, "na", "test", "none")[2].read_text())
    assert manifest["weights"] == manifest["weights_source"] == f"file:{path.name}:sha256:{sha[:16]}"
    assert manifest["input_size"] == 224 and str(path.parent) not in json.dumps(manifest)
    return first


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_clip_vitb16_from_open_clip_and_openai_files(crops, tmp_path):
    """CLIP ViT-B/16: open_clip's state dict (what `open_clip.create_model("ViT-B-16")` holds and open_clip
    saves) and OpenAI's ViT-B-16.pt layout (a TorchScript archive of fp16 tensors under the same names, which
    open_clip's own `pretrained=PATH` refuses to read with weights_only) both load, into QuickGELU blocks as
    OpenAI trained them; the features are the saved model's image embeddings (512-d)."""
    import open_clip  # envs/requirements.txt installs it: its absence is a failure

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-16", pretrained=None, force_quick_gelu=True)
    state = model.state_dict()
    assert {"visual.class_embedding", "visual.conv1.weight", "token_embedding.weight", "logit_scale"} <= set(state)
    path = tmp_path / "open_clip_pytorch_model.bin"
    torch.save(state, path)
    spec = probes.backbone_spec("clip_vitb16", {"weights": str(path)})
    got = _extract_twice(spec, crops, tmp_path / "cache", 512)
    backbone = probes.build_backbone(spec)
    assert any(isinstance(m, open_clip.transformer.QuickGELU) for m in backbone.module.modules()), "GELU, not QuickGELU"
    np.testing.assert_allclose(got.features, _reference(model.visual, crops[0], spec), rtol=1e-4, atol=1e-4)

    # OpenAI's file: torch.jit.save of the whole model, fp16, plus three integer attributes open_clip drops
    half = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    half |= {
        "input_resolution": torch.tensor(224),
        "context_length": torch.tensor(77),
        "vocab_size": torch.tensor(49408),
    }
    openai = tmp_path / "ViT-B-16.pt"
    torchscript_archive(half).save(str(openai))
    spec16 = probes.backbone_spec("clip_vitb16", {"weights": str(openai)})
    probes.BUILT.clear()
    fp16 = probes.array_features(spec16, *crops, dataset="astronaut", split="test", cache_dir=tmp_path / "c16")
    assert fp16.info["weights"] == f"file:ViT-B-16.pt:sha256:{probes.file_sha256(openai)[:16]}"
    rounded = copy.deepcopy(model.visual)
    for p in rounded.parameters():
        p.data = p.data.half().float()
    np.testing.assert_allclose(fp16.features, _reference(rounded, crops[0], spec16), rtol=1e-4, atol=1e-4)


def test_dino_vitb16_from_dino_file(crops, tmp_path):
    """DINO ViT-B/16: dino_vitbase16_pretrain.pth is the teacher ViT's plain state dict (cls_token, pos_embed,
    patch_embed.proj.*, blocks.N.*, norm.*; no head): it loads into timm's vit_base_patch16_224.dino; the
    features are the class token (768-d). Another input size is refused, naming the backbone and the key."""
    torch.manual_seed(0)
    model = timm.create_model("vit_base_patch16_224.dino", num_classes=0)
    state = model.state_dict()
    assert list(state)[:3] == ["cls_token", "pos_embed", "patch_embed.proj.weight"] and list(state)[-2:] == [
        "norm.weight",
        "norm.bias",
    ]
    assert (
        len(state) == 150 and state["pos_embed"].shape == (1, 197, 768) and not any(k.startswith("head") for k in state)
    )
    path = tmp_path / "dino_vitbase16_pretrain.pth"
    torch.save(state, path)
    spec = probes.backbone_spec(
        "dino_vitb16", {"weights": str(path)}, default_input_size=128
    )  # CNNs' size: not a ViT's
    got = _extract_twice(spec, crops, tmp_path / "cache", 768)
    np.testing.assert_allclose(got.features, _reference(model, crops[0], spec), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match=r"backbone dino_vitb16: input_size 128 does not fit .* remove input_size"):
        probes.backbone_spec("dino_vitb16", {"weights": str(path), "input_size": 128})


def test_dino_resnet50_from_dino_file(crops, tmp_path):
    """DINO ResNet-50: dino_resnet50_pretrain.pth is torchvision's ResNet-50 state dict without fc (conv1.weight,
    bn1.*, layer1.0.conv1.weight, ...): made here with torchvision itself, it loads into timm's resnet50; the
    features are torchvision's pooled 2048-d output."""
    torch.manual_seed(0)
    model = torchvision.models.resnet50()
    model.fc = nn.Identity()
    for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):  # non-trivial running statistics
        bn.running_mean.uniform_(-0.1, 0.1)
        bn.running_var.uniform_(0.5, 1.5)
    state = model.state_dict()
    assert "conv1.weight" in state and "layer1.0.conv1.weight" in state and not any(k.startswith("fc") for k in state)
    path = tmp_path / "dino_resnet50_pretrain.pth"
    torch.save(state, path)
    spec = probes.backbone_spec("dino_resnet50", {"weights": str(path)})
    got = _extract_twice(spec, crops, tmp_path / "cache", 2048)
    np.testing.assert_allclose(got.features, _reference(model, crops[0], spec), rtol=1e-4, atol=1e-4)
