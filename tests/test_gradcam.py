"""Grad-CAM: the heatmap of a model that looks at a planted patch peaks on the patch; every detector family
gets a finite heatmap of its input size from its own target layer; the grid picks and draws the right crops."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from test_loader import make_shards, videos
from torch import nn

from dfpipe.data.loader import normalize
from dfpipe.evaluation.gradcam import (
    GROUPS,
    crops_of,
    gradcam_grid,
    grid_from_predictions,
    heatmaps,
    pick_examples,
    target_layer,
)
from dfpipe.evaluation.predict import eval_stream, predict
from dfpipe.io import write_parquet
from dfpipe.models.detectors import create_detector
from dfpipe.models.detectors.base import HALF, Detector

SIZE = 64
PATCH = 12


class PatchDetector(Detector):
    """Fake exactly when a red patch is present: channel 0 of its conv responds to red minus green (the only
    channel the head reads); channel 1 responds to brightness everywhere and is ignored by the head."""

    name = "patch"

    def __init__(self) -> None:
        conv = nn.Conv2d(3, 2, 3, padding=1)
        super().__init__(
            nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()),
            2,
            input_size=SIZE,
            mean=HALF,
            std=HALF,
            dropout=0.0,
        )
        with torch.no_grad():
            conv.weight.zero_()
            conv.bias.zero_()
            conv.weight[0, 0, 1, 1], conv.weight[0, 1, 1, 1] = 1.0, -1.0
            conv.weight[1, :, 1, 1] = 1.0
            conv.bias[1] = 3.0
            self.head.weight.copy_(torch.tensor([[40.0, 0.0]]))
            self.head.bias.fill_(-2.0)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)


def planted(top: int, left: int, seed: int) -> np.ndarray:
    """Grey noise with a red PATCH² square at (top, left)."""
    image = np.random.default_rng(seed).integers(100, 156, (SIZE, SIZE, 3)).astype(np.uint8)
    image[top : top + PATCH, left : left + PATCH] = (230, 20, 20)
    return image


def test_heatmap_peaks_on_the_planted_patch() -> None:
    model = PatchDetector().eval()
    spots = [(4, 4), (40, 10), (20, 44), (46, 46)]
    images = np.stack([planted(top, left, i) for i, (top, left) in enumerate(spots)])
    with torch.no_grad():
        logits = model((torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5) - 1)
    assert (logits > 0).all(), "the toy model must call every patched image fake"
    cams, attention = heatmaps(model, images, [True] * len(spots))
    assert attention is None and cams.shape == (len(spots), SIZE, SIZE)
    for cam, (top, left) in zip(cams, spots):
        inside = np.zeros(cam.shape, bool)
        inside[top : top + PATCH, left : left + PATCH] = True
        peak = np.unravel_index(np.argmax(cam), cam.shape)
        assert inside[peak], f"peak {peak} outside the patch at {(top, left)}"
        assert cam[inside].mean() > 5 * cam[~inside].mean()


def test_heatmap_of_the_opposite_decision_does_not_point_at_the_patch() -> None:
    """Explaining "real" for a patched image: the patch is evidence against it, so it is not highlighted."""
    model = PatchDetector().eval()
    image = planted(20, 20, 0)[None]
    cam = heatmaps(model, image, [False])[0][0]
    inside = np.zeros(cam.shape, bool)
    inside[20 : 20 + PATCH, 20 : 20 + PATCH] = True
    assert cam[inside].mean() <= cam[~inside].mean() + 1e-6


@pytest.mark.parametrize(
    "model, kwargs, layer",
    [
        ("meso4", {}, "backbone.3.2"),
        ("mobilenet_v1", {}, "backbone.blocks"),  # its conv_head and bn2 are Identity: no head conv
        ("mobilenet_v2", {}, "backbone.bn2"),
        ("resnet18", {}, "backbone.layer4"),
        ("tf_efficientnet_lite0", {}, "backbone.bn2"),
        ("multi_attention", {"backbone": "tf_efficientnet_lite0"}, "backbone.blocks.6"),
    ],
)
def test_every_family_gives_a_finite_heatmap_of_the_input_size(model, kwargs, layer) -> None:
    torch.manual_seed(0)
    detector = create_detector(model, input_size=SIZE, **kwargs)
    assert target_layer(detector)[0] == layer
    images = np.random.default_rng(1).integers(0, 256, (2, SIZE, SIZE, 3), dtype=np.uint8)
    detector.train()
    cams, attention = heatmaps(detector, images, [True, False])
    assert detector.training, "heatmaps must leave the detector's mode as it was"
    assert cams.shape == (2, SIZE, SIZE) and np.isfinite(cams).all() and cams.max() > 0
    if model == "multi_attention":
        assert attention is not None and attention.shape == (2, SIZE, SIZE) and np.isfinite(attention).all()
    else:
        assert attention is None


@pytest.mark.parametrize("unfreeze_last", [0, 2])
def test_mobilenet_v1_as_the_seed_sweeps_it_builds_and_gets_a_heatmap(tmp_path, unfreeze_last) -> None:
    """The MobileNet seed's detector: MobileNet V1 with ImageNet-style weights (here random ones in timm's layout:
    the hub is offline), dropout 0.5 and only the last blocks trained. Grad-CAM reads the last stage's maps (what
    the global pool reduces: V1 has no head conv, its bn2 is an Identity), also when the whole backbone is frozen
    (unfreeze_last 0: the head alone)."""
    import timm

    from dfpipe.models.experiments import build_detector

    torch.manual_seed(0)
    source = timm.create_model("mobilenetv1_100", num_classes=1000)
    weights = tmp_path / "mobilenetv1_100.pth"
    torch.save(source.state_dict(), weights)
    spec = {
        "name": "mobilenet",
        "model": "mobilenetv1_100",
        "pretrained": str(weights),
        "input_size": SIZE,
        "dropout": 0.5,
        "unfreeze_last": unfreeze_last,
    }
    detector = build_detector(spec)
    assert detector.dropout.p == 0.5 and detector.input_size == SIZE
    assert torch.equal(detector.backbone.conv_stem.weight, source.conv_stem.weight)
    groups = detector.backbone_groups()
    trained = [all(p.requires_grad for p in g) for g in groups]
    assert trained == [False] * (len(groups) - unfreeze_last) + [True] * unfreeze_last
    name, layer = target_layer(detector)
    assert name == "backbone.blocks" and layer is detector.backbone.blocks
    images = np.random.default_rng(1).integers(0, 256, (2, SIZE, SIZE, 3), dtype=np.uint8)
    cams, attention = heatmaps(detector.eval(), images, [True, False])
    assert attention is None and cams.shape == (2, SIZE, SIZE) and np.isfinite(cams).all() and cams.max() > 0


def test_examples_are_the_confident_ones_and_the_worst_errors() -> None:
    labels = np.array([0, 0, 0, 1, 1, 1, 0, 1])
    scores = np.array([0.1, 0.3, 0.05, 0.9, 0.65, 0.99, 0.8, 0.15])
    groups = pick_examples(labels, scores, threshold=0.5, k=2)
    assert groups == {GROUPS[0]: [2, 0], GROUPS[1]: [5, 3], GROUPS[2]: [7, 6]}
    # at another threshold the decisions and therefore the groups change
    assert pick_examples(labels, scores, threshold=0.7, k=3)[GROUPS[2]] == [7, 6, 4]


def test_grid_png_has_a_row_per_group_and_the_caption(tmp_path) -> None:
    model = PatchDetector().eval()
    images = np.stack([planted(8 * i, 8 * i, i) for i in range(6)])
    out = gradcam_grid(
        model,
        tmp_path / "grid" / "q95.png",
        images,
        [0, 0, 1, 1, 0, 1],
        [0.1, 0.2, 0.9, 0.8, 0.7, 0.3],
        "patch detector, q95",
        threshold=0.5,
        k=2,
    )
    assert out.is_file() and not list(out.parent.glob(".*.part"))
    with Image.open(out) as png:
        width, height = png.size
    assert height > 3 * 150 and width > 2 * 150  # three rows of two tiles at 100 dpi


@pytest.mark.parametrize("k, attention", [(1, False), (3, True)])
def test_grid_text_stays_inside_the_figure(tmp_path, monkeypatch, k: int, attention: bool) -> None:
    """A long caption over few tiles (one per row) or many (with attention panels): the caption is wrapped,
    not shrunk, and no text of the grid (caption, tile titles, row names) runs past the figure's edges."""
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.text import Text

    from dfpipe.evaluation.gradcam import CAPTION_PT, grid_figure

    rng = np.random.default_rng(0)
    n = 3 * k
    images = rng.integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)
    cams = rng.random((n, SIZE, SIZE), dtype=np.float32)
    groups = {g: list(range(r * k, (r + 1) * k)) for r, g in enumerate(GROUPS)}
    caption = (
        "multi_attention_efficientnet_b4 trained at q95, ELA q90, test q10, validation threshold · "
        "Grad-CAM on backbone.blocks.6 for the decision at threshold 0.723"
    )
    figures = []
    real_close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig: figures.append(fig) or real_close(fig))
    labels, scores = np.arange(n) % 2, rng.random(n)
    out = grid_figure(tmp_path / "q10.png", images, labels, scores, cams, groups, caption, cams if attention else None)
    assert out.read_bytes()[:4] == b"\x89PNG"
    [fig] = figures
    canvas = FigureCanvasAgg(fig)  # closing the figure dropped its canvas
    canvas.draw()
    renderer = canvas.get_renderer()
    texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text()]
    caption_lines = fig.get_suptitle().split("\n")
    if k == 1:
        assert len(caption_lines) >= 2  # one tile a row is too narrow for it on one line
    words = [w for w in " ".join(caption_lines).split() if w != "·"]
    assert words == [w for w in caption.split() if w != "·"]  # wrapped, nothing dropped
    assert any(t.get_text() == fig.get_suptitle() and t.get_fontsize() == CAPTION_PT for t in texts)
    for t in texts:
        box = t.get_window_extent(renderer)
        assert fig.bbox.x0 <= box.x0 and box.x1 <= fig.bbox.x1, t.get_text()
        assert fig.bbox.y0 <= box.y0 and box.y1 <= fig.bbox.y1, t.get_text()


def predictions_file(detector, test: dict, path, train_quality: int = 77):
    """The predict rule's table of `detector` on test shards {quality: shards}: what the gradcam job reads."""
    import pandas as pd

    parts = []
    for q, shards in test.items():
        part = predict(detector, shards, device="cpu")
        part.insert(0, "split", "test")
        part.insert(0, "test_quality", q)
        parts.append(part)
    table = pd.concat(parts, ignore_index=True)
    for column, value in (("train_methods", "all"), ("train_quality", train_quality), ("detector", detector.name)):
        table.insert(0, column, value)
    write_parquet(path, table)
    return path


def test_grid_from_predictions_reads_back_the_picked_crops(tmp_path, monkeypatch) -> None:
    """The grid's examples are picked from the predictions and only those crops are read back: each crop handed
    to the grid scores (again, here) what the predictions say, and the picks are those of pick_examples."""
    import pandas as pd

    import dfpipe.evaluation.gradcam as gradcam

    shards = make_shards(tmp_path, "test", videos(3, 3), frames=3, n_shards=2)
    torch.manual_seed(0)
    detector = create_detector("meso4", input_size=16).eval()
    table = pd.read_parquet(predictions_file(detector, {77: shards}, tmp_path / "pred.parquet"))
    seen = {}
    real = gradcam.gradcam_grid

    def recording(det, out_path, images, labels, scores, caption, threshold, k):
        seen.update(images=images, labels=np.asarray(labels), scores=np.asarray(scores))
        return real(det, out_path, images, labels, scores, caption, threshold, k)

    monkeypatch.setattr(gradcam, "gradcam_grid", recording)
    out = grid_from_predictions(detector, shards, table, tmp_path / "q77.png", "meso4 q77", threshold=0.5, k=2)
    assert out.is_file() and out.stat().st_size > 1000
    picked = sorted({i for v in pick_examples(table["label"], table["score"], 0.5, 2).values() for i in v})
    assert len(picked) >= 3 and np.allclose(seen["scores"], table["score"].to_numpy()[picked])
    assert seen["labels"].tolist() == table["label"].to_numpy()[picked].tolist()
    with torch.no_grad():
        batch = torch.from_numpy(seen["images"]).permute(0, 3, 1, 2)
        again = torch.sigmoid(detector(normalize(batch, detector.mean, detector.std))).numpy()
    assert np.allclose(again, seen["scores"], atol=1e-5)  # the crops are those the scores belong to


def test_crops_of_predictions_older_than_the_shards(tmp_path) -> None:
    shards = make_shards(tmp_path, "test", videos(2, 2), frames=2, n_shards=1)
    detector = create_detector("meso4", input_size=16)
    assert crops_of(detector, shards, [("original/q77/000", 0)]).shape == (1, 16, 16, 3)
    # only the named samples are read and decoded, not the whole stream
    picked = eval_stream(detector, shards, samples={"original-000-00000", "Deepfakes-001_002-00010"}).entries
    assert sorted(e.key for e in picked) == ["Deepfakes-001_002-00010", "original-000-00000"], picked
    with pytest.raises(ValueError, match=r"test-0000.tar hold no sample \('original/q77/999', 0\).*rerun snakemake"):
        crops_of(detector, shards, [("original/q77/000", 0), ("original/q77/999", 0)])


def test_model_grids_of_a_trained_model_per_test_quality(tmp_path, monkeypatch) -> None:
    """The workflow's gradcam job: best.pt alone (its spec and ELA) -> one grid per test quality, threshold and
    caption said."""
    import dfpipe.evaluation.gradcam as gradcam
    from dfpipe.apps.predict import load_model
    from dfpipe.models.experiments import build_detector
    from dfpipe.models.train import train

    spec = {"name": "meso_ela", "model": "meso4", "input_size": 16, "ela": {"quality": 90, "scale": 15}}
    torch.manual_seed(0)
    best = train(
        build_detector(spec),
        make_shards(tmp_path / "train", "train", videos(2, 2)),
        make_shards(tmp_path / "val", "val", videos(2, 2), n_shards=1),
        tmp_path / "data" / "models" / "meso_ela" / "q77-all",
        {"epochs": 1, "batch_size": 4, "max_steps_per_epoch": 1, "num_workers": 0},
        device="cpu",
        spec=spec,
    )
    test = {
        q: make_shards(tmp_path / "data" / "shards", "test", videos(2, 2), frames=2, n_shards=1, quality=q)
        for q in (77, 10)
    }
    calls = []
    real = gradcam.grid_from_predictions

    def recording(detector, shards, predictions, out_path, caption, **kwargs):
        calls.append((detector.ela, caption, kwargs["threshold"], set(predictions["test_quality"])))
        return real(detector, shards, predictions, out_path, caption, **kwargs)

    monkeypatch.setattr(gradcam, "grid_from_predictions", recording)
    outs = {q: tmp_path / "results" / "gradcam" / "meso_ela" / "q77-all" / f"q{q}.png" for q in test}
    model = load_model(best)
    model.detector.ela = model.ela  # scored through the model's ELA, as the predict rule does
    pred = predictions_file(model.detector, test, tmp_path / "predictions.parquet")
    written = gradcam.model_grids(best, test, pred, outs, 77, k=2, device="cpu")
    assert written == [outs[77], outs[10]] and all(p.stat().st_size > 1000 for p in written)
    assert [c[1] for c in calls] == [
        f"meso_ela trained at q77, ELA q90, test q{q}, validation threshold" for q in (77, 10)
    ]
    # the model's ELA, scored, and the threshold the trainer chose on validation, stored in best.pt
    assert all(c[0] is not None and c[0].quality == 90 and c[2] == model.threshold for c in calls)
    assert [c[3] for c in calls] == [{77}, {10}]  # each grid from the scores of its own test quality
    with pytest.raises(ValueError, match=r"test shards of qualities \[10, 77\] but outputs for \[77\]"):
        gradcam.model_grids(best, test, pred, {77: outs[77]}, 77, device="cpu")
