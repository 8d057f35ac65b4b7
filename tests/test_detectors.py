"""Detectors: every registered one trains a step at a small input; Meso-4 as in the paper; multi-attention's
loss and augmentation; unfreeze_last."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from dfpipe.model_names import DETECTORS
from dfpipe.models.detectors import Detector, create_detector, list_detectors
from dfpipe.models.detectors.meso import Meso4

torch.set_num_threads(1)

SMALL = 64


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(2, 3, SMALL, SMALL, generator=torch.Generator().manual_seed(0))


def _step(detector: Detector, x: torch.Tensor) -> torch.Tensor:
    detector.train()
    logits = detector(x)
    loss = detector.loss(logits, torch.tensor([0.0, 1.0]))["loss"]
    loss.backward()
    return logits


def test_registry_names() -> None:
    # the workflow layer's torch-free copy of the names (dfpipe.model_names) must list the registry's
    assert list_detectors() == sorted(DETECTORS) and len(DETECTORS) == 8


@pytest.mark.parametrize("name", list_detectors())
def test_forward_backward_features(name: str, images: torch.Tensor) -> None:
    detector = create_detector(name)
    logits = _step(detector, images)
    assert logits.shape == (2,) and torch.isfinite(logits).all()
    assert detector.head.weight.grad is not None and detector.head.weight.grad.abs().sum() > 0
    first = detector.backbone_groups()[0][0]
    assert first.grad is not None and first.grad.abs().sum() > 0, "no gradient reached the first block"
    detector.eval()
    feats = detector.features(images)
    assert feats.shape == (2, detector.num_features)
    assert torch.allclose(detector.head(feats).squeeze(1), detector(images), atol=1e-5)
    both = detector.logits_and_features(images)
    assert torch.allclose(both[0], detector(images), atol=1e-5) and torch.allclose(both[1], feats, atol=1e-5)
    assert detector.name == name and len(detector.mean) == len(detector.std) == 3


def test_defaults_per_model() -> None:
    assert {n: create_detector(n).input_size for n in ("meso4", "efficientnet_b4", "resnet18", "mobilenet_v2")} == {
        "meso4": 256,
        "efficientnet_b4": 256,
        "resnet18": 224,
        "mobilenet_v2": 224,
    }
    lite = create_detector("tf_efficientnet_lite0")  # any timm name through config
    assert (lite.input_size, lite.mean, lite.std) == (224, (0.5,) * 3, (0.5,) * 3)
    assert create_detector("resnet18").mean == (0.485, 0.456, 0.406)
    assert create_detector("meso4").mean == (0.5,) * 3
    assert create_detector("meso4").dropout.p == 0.5 and create_detector("resnet18").dropout.p == 0.0
    assert create_detector("resnet18", dropout=0.3, input_size=128).dropout.p == 0.3
    assert create_detector("resnet18", input_size=128).input_size == 128


def test_unknown_name() -> None:
    with pytest.raises(ValueError, match="list_detectors"):
        create_detector("no_such_net")


def test_meso4_as_in_paper() -> None:
    meso = Meso4()
    assert sum(p.numel() for p in meso.parameters()) == 27_977
    convs = [m for m in meso.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size[0]) for c in convs] == [(8, 3), (8, 5), (16, 5), (16, 5)]
    assert meso.head.in_features == 16 and meso.head.out_features == 1
    x = torch.randn(1, 3, 256, 256)
    assert meso(x).shape == (1,) and meso.features(x).shape == (1, 16)
    # at the paper's 256 px the adaptive last pool is the paper's max-pool 4 (32×32 -> 8×8)
    meso.eval()
    before_pool = meso.backbone[3][:3](meso.backbone[:3](x))
    assert before_pool.shape == (1, 16, 32, 32)
    assert torch.equal(meso.backbone[:4](x), nn.functional.max_pool2d(before_pool, 4))


@pytest.mark.parametrize("name", ["meso4", "mesoinception4"])
def test_meso_dropout_setting_reaches_both_dropouts(name: str) -> None:
    """`dropout` sets the Meso nets' dropout before the dense layer as well as before the output (the paper's two,
    0.5 each by default); a pair sets each. Regression guard: a fixed 0.5 before the dense layer fails here."""

    def rates(detector: nn.Module) -> list[float]:
        return [m.p for m in detector.modules() if isinstance(m, nn.Dropout)]

    assert rates(create_detector(name)) == [0.5, 0.5]
    assert rates(create_detector(name, dropout=0.0)) == [0.0, 0.0]
    assert rates(create_detector(name, dropout=0.3)) == [0.3, 0.3]
    assert rates(create_detector(name, dropout=[0.5, 0.0])) == [0.5, 0.0]  # the demo's: before dense, before output
    with pytest.raises(ValueError, match="before the dense layer"):
        create_detector(name, dropout=[0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="Meso"):
        create_detector("resnet18", dropout=[0.1, 0.2])


def test_mesoinception4_starts_with_inception_modules(images: torch.Tensor) -> None:
    meso = create_detector("mesoinception4")
    dilations = [
        m.dilation[0] for m in meso.backbone[0].modules() if isinstance(m, nn.Conv2d) and m.kernel_size[0] == 3
    ]
    assert dilations == [1, 2, 3]
    assert meso.backbone[0][0].out_channels == 11 and meso.backbone[1][0].out_channels == 12


def test_multi_attention_loss_and_centres(images: torch.Tensor) -> None:
    det = create_detector("multi_attention", backbone="tf_efficientnet_lite0", attention_maps=3, augment_prob=0.0)
    assert det.weights_name == "tf_efficientnet_lite0" and det.input_size == 224
    det.train()
    labels = torch.tensor([0.0, 1.0])
    terms = det.loss(det(images), labels)
    independence = terms["independence"]
    assert independence.ndim == 0 and torch.isfinite(independence) and independence.requires_grad
    assert torch.allclose(terms["loss"], terms["bce"] + independence)  # the total the trainer minimises
    independence.backward()
    assert det.attention[0].weight.grad.abs().sum() > 0 and det.texture.project[0].weight.grad.abs().sum() > 0
    centres = det.centres.clone()
    assert bool(det.centres_set) and centres.shape == (3, 64)
    det.eval()
    logits = det(images + 1)
    assert torch.equal(det.centres, centres), "evaluation must not move the centres"
    assert set(det.loss(logits, labels)) == {"loss", "bce"}  # no regional term outside training
    det.train()
    det(images + 1)
    assert not torch.equal(det.centres, centres)


def test_multi_attention_erases_one_attended_region(images: torch.Tensor) -> None:
    det = create_detector("multi_attention", backbone="tf_efficientnet_lite0", augment_prob=1.0).train()
    erased = det._erase_attended(images)
    changed = erased != images
    assert changed.any() and not changed.all()
    assert (erased[changed] == 0).all()
    assert changed.any(dim=1).logical_not().logical_or(changed.all(dim=1)).all(), "whole pixels are erased"
    det.augment_prob = 0.0
    assert torch.equal(det._erase_attended(images), images)


def _trainable(detector: Detector) -> set[str]:
    return {n for n, p in detector.named_parameters() if p.requires_grad}


def test_unfreeze_last() -> None:
    det = create_detector("resnet18", unfreeze_last=1)
    assert _trainable(det) == {n for n, _ in det.named_parameters() if n.startswith(("backbone.layer4.", "head."))}
    det.train()
    assert not det.backbone.layer3[0].bn1.training and det.backbone.layer4[0].bn1.training
    assert _trainable(create_detector("resnet18", unfreeze_last=0)) == {"head.weight", "head.bias"}
    assert _trainable(create_detector("meso4", unfreeze_last=2)) == {
        n for n, _ in Meso4().named_parameters() if n.startswith(("backbone.3.", "backbone.4.", "head."))
    }
    ma = create_detector("multi_attention", backbone="tf_efficientnet_lite0", unfreeze_last=1)
    assert {n.split(".")[0] for n in _trainable(ma)} == {"backbone", "attention", "texture", "head"}
    assert all(n.startswith("backbone.blocks.6.") for n in _trainable(ma) if n.startswith("backbone."))
    with pytest.raises(ValueError, match="has 5 backbone blocks"):
        create_detector("resnet18", unfreeze_last=6)


def test_mobilenet_v1_seed_options() -> None:
    """The MobileNet seed's options: dropout rate, unfreeze the last k blocks (timm's 5 stages + stem)."""
    det = create_detector("mobilenet_v1", dropout=0.3, unfreeze_last=1)
    assert det.dropout.p == 0.3 and det.mean == (0.5,) * 3 and len(det.backbone_groups()) == 6
    assert {".".join(n.split(".")[:3]) for n in _trainable(det)} == {"backbone.blocks.4", "head.weight", "head.bias"}
    assert _trainable(create_detector("mobilenet_v1", unfreeze_last=0)) == {"head.weight", "head.bias"}


def test_mobilenet_v1_imagenet_offline_names_the_packaged_mobilenet(monkeypatch) -> None:
    from dfpipe.models import weights

    def no_hub(model_name: str):
        raise OSError("stand-in: hub unreachable")

    monkeypatch.setattr(weights, "hub_state_dict", no_hub)
    with pytest.raises(LookupError, match=r"mobilenetv1_100: the timm hub failed .*offline, use model: mobilenet_v2"):
        create_detector("mobilenet_v1", pretrained="imagenet")
    assert create_detector("mobilenet_v2", pretrained="imagenet").input_size == 224  # the packaged weights load


def test_config_mobilenet_rows_with_and_without_ela() -> None:
    """config.yaml's two MobileNet entries validate and build offline; only the ELA one carries ELA settings;
    the schema takes `ela: true` and refuses a quality out of range, naming the key."""
    import yaml

    from dfpipe import config as dfconfig
    from dfpipe.models.ela import ELA
    from dfpipe.models.experiments import build_detector

    raw = yaml.safe_load((Path(__file__).parents[1] / "config.yaml").read_text())
    specs = {d["name"]: d for d in dfconfig.validate(raw, source="config.yaml")["detectors"]}
    plain, ela = build_detector(specs["mobilenet"]), build_detector(specs["mobilenet_ela"])
    assert plain.ela is None and ela.ela == ELA(90, 15) and plain.input_size == ela.input_size == 128
    raw["detectors"].append({"name": "m", "model": "mobilenet_v2", "ela": True})
    dfconfig.validate(raw, source="config.yaml")
    raw["detectors"][-1]["ela"] = {"quality": 0}
    with pytest.raises(dfconfig.ConfigError, match=r"detectors\.\d+\.ela"):
        dfconfig.validate(raw, source="config.yaml")


@pytest.mark.parametrize("name", [*list_detectors(), "tf_efficientnet_lite0"])
def test_the_frozen_graph_scores_as_the_detector_does(name: str) -> None:
    """Predict runs a frozen TorchScript graph on CPU: every detector traces (no silent eager fallback) and
    gives the eager logits and features at batch sizes other than the traced one."""
    from dfpipe.evaluation.predict import frozen

    detector = create_detector(name, input_size=SMALL)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # train-mode passes move the BatchNorm statistics away from their defaults
        detector.train()
        for _ in range(3):
            detector(torch.randn(4, 3, SMALL, SMALL, generator=gen) * 2 + 0.5)
    run = frozen(detector)
    assert isinstance(run, torch.jit.ScriptModule), f"{name} fell back to eager mode"
    for n in (1, 5):
        x = torch.randn(n, 3, SMALL, SMALL, generator=gen).contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            logits, feats = detector.logits_and_features(x)
            got_logits, got_feats = run(x)
        assert got_logits.shape == logits.shape and got_feats.shape == feats.shape
        assert torch.allclose(got_logits, logits, atol=1e-4, rtol=1e-4), (got_logits, logits)
        assert torch.allclose(got_feats, feats, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", list_detectors())
def test_cam_layer_is_a_spatial_layer_of_the_detector(name: str) -> None:
    """Grad-CAM's target layer, each family's own choice: a module of the detector under the name it gives,
    whose output keeps a spatial map (what Grad-CAM weighs)."""
    detector = create_detector(name, input_size=SMALL).eval()
    layer_name, layer = detector.cam_layer()
    assert dict(detector.named_modules())[layer_name] is layer
    seen = []
    hook = layer.register_forward_hook(lambda _m, _i, out: seen.append(out))
    with torch.no_grad():
        detector(torch.zeros(1, 3, SMALL, SMALL))
    hook.remove()
    assert seen and seen[-1].ndim == 4 and min(seen[-1].shape[-2:]) >= 1


class _Plain(Detector):
    name = "plain"

    def __init__(self, backbone: nn.Module, num_features: int) -> None:
        super().__init__(backbone, num_features, input_size=SMALL, mean=(0.5,) * 3, std=(0.5,) * 3, dropout=0.0)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)


def test_cam_layer_of_a_detector_without_its_own_choice() -> None:
    """The base class's choice: the backbone's last conv or norm layer; a backbone without one is refused."""
    conv = _Plain(
        nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()), 4
    )
    assert conv.cam_layer() == ("backbone.1", conv.backbone[1])
    with pytest.raises(ValueError, match="_Plain has no convolutional layer to explain"):
        _Plain(nn.Sequential(nn.Flatten(), nn.Linear(3 * SMALL * SMALL, 4)), 4).cam_layer()
