"""Pretrained weights: packaged offline files by key order, local files, the hub (stand-ins), clear errors."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import timm
import torch
import torchvision

from dfpipe.models import weights
from dfpipe.models.detectors import create_detector

torch.set_num_threads(1)


def _no_hub(model_name: str) -> weights.StateDict:
    raise OSError(f"stand-in: hub unreachable for {model_name}")


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(weights, "hub_state_dict", _no_hub)


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def test_none() -> None:
    assert weights.resolve("none", "resnet18") is None


def test_mobilenet_v2_offline_equals_torchvision(offline: None, x: torch.Tensor) -> None:
    path = weights.packaged_file(weights.PACKAGED["mobilenetv2_100"])
    reference = torchvision.models.mobilenet_v2()
    reference.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    ours = timm.create_model("mobilenetv2_100")
    ours.load_state_dict(weights.resolve("imagenet", "mobilenetv2_100"), strict=False)
    reference.eval(), ours.eval()
    with torch.no_grad():
        assert torch.allclose(ours(x), reference(x), atol=1e-4)
        # and through the registry: the detector's features are torchvision's pooled features
        detector = create_detector("mobilenet_v2", pretrained="imagenet").eval()
        pooled = reference.features(x).mean(dim=(2, 3))
        assert torch.allclose(detector.features(x), pooled, atol=1e-4)


def test_lite0_offline_copies_every_tensor(offline: None) -> None:
    path = weights.packaged_file(weights.PACKAGED["tf_efficientnet_lite0"])
    source = [v for k, v in torch.load(path, weights_only=True).items() if not k.endswith("num_batches_tracked")]
    state = weights.resolve("imagenet", "tf_efficientnet_lite0")
    assert len(state) == len(source) and all(torch.equal(a, b) for a, b in zip(state.values(), source))
    detector = create_detector("multi_attention", backbone="tf_efficientnet_lite0", pretrained="imagenet")
    loaded = detector.backbone.state_dict()
    assert all(torch.equal(loaded[k], state[k]) for k in loaded if not k.endswith("num_batches_tracked"))


def test_hub_is_tried_first(monkeypatch: pytest.MonkeyPatch) -> None:
    stand_in = timm.create_model("resnet18", num_classes=0).state_dict()
    monkeypatch.setattr(weights, "hub_state_dict", lambda name: stand_in if name == "resnet18" else _no_hub(name))
    detector = create_detector("resnet18", pretrained="imagenet")
    assert all(torch.equal(detector.backbone.state_dict()[k], v) for k, v in stand_in.items())


def test_unreachable_hub_fails_fast_and_falls_back(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import huggingface_hub.constants as hf

    # the real timm/huggingface path, with an empty cache and a hub that does not answer
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(weights, "reachable", lambda url, timeout=weights.HUB_PROBE_TIMEOUT: False)
    start = time.monotonic()
    state = weights.resolve("imagenet", "mobilenetv2_100")
    assert time.monotonic() - start < 15
    packaged = torch.load(weights.packaged_file(weights.PACKAGED["mobilenetv2_100"]), weights_only=True)
    assert torch.equal(state["conv_stem.weight"], packaged["features.0.0.weight"])
    with pytest.raises(LookupError, match="no offline weights exist"):
        weights.resolve("imagenet", "resnet18")


def test_imagenet_without_offline_weights(offline: None) -> None:
    for name in ("resnet18", "meso4"):
        with pytest.raises(LookupError, match=r"no offline weights exist.*pretrained: /path/to/weights\.pth"):
            create_detector(name, pretrained="imagenet")


def test_local_file(tmp_path: Path, x: torch.Tensor) -> None:
    backbone = timm.create_model("resnet18", num_classes=0).state_dict()
    torch.save(backbone, tmp_path / "r18.pth")
    detector = create_detector("resnet18", pretrained=str(tmp_path / "r18.pth"))
    assert all(torch.equal(detector.backbone.state_dict()[k], v) for k, v in backbone.items())
    # a training checkpoint ({"model": whole detector}) restores the whole detector, head included
    torch.save({"model": detector.state_dict(), "epoch": 3}, tmp_path / "best.pt")
    again = create_detector("resnet18", pretrained=str(tmp_path / "best.pt")).eval()
    assert torch.equal(again(x), detector.eval()(x))


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"missing\.pth: no such file.*pretrained: /path/to/weights\.pth"):
        weights.resolve(str(tmp_path / "missing.pth"), "resnet18")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pth: not a readable weights file"):
        weights.resolve(str(tmp_path / "junk.pth"), "resnet18")
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="list.pth: holds no state dict"):
        weights.resolve(str(tmp_path / "list.pth"), "resnet18")
    torch.save(timm.create_model("mobilenetv2_100", num_classes=0).state_dict(), tmp_path / "mnv2.pth")
    with pytest.raises(ValueError, match="mnv2.pth: do not fit this model"):
        create_detector("resnet18", pretrained=str(tmp_path / "mnv2.pth"))


def test_key_order_checks_count_and_shapes() -> None:
    target = {"a.weight": torch.zeros(2, 3), "a.bn.num_batches_tracked": torch.tensor(0), "b": torch.zeros(4)}
    ok = weights.by_key_order({"x": torch.ones(2, 3), "y": torch.ones(4)}, target, source="f.pth")
    assert list(ok) == ["a.weight", "b"] and torch.equal(ok["b"], torch.ones(4))
    with pytest.raises(ValueError, match="f.pth: 1 tensors, but the model has 2"):
        weights.by_key_order({"x": torch.ones(2, 3)}, target, source="f.pth")
    with pytest.raises(ValueError, match=r"f.pth: tensor 1 y \(5,\) does not fit b \(4,\)"):
        weights.by_key_order({"x": torch.ones(2, 3), "y": torch.ones(5)}, target, source="f.pth")
