"""Frozen-backbone probes on small real features: crops of the carphone clip as "real" and the same crops with
a hue shift (the Deepfakes stand-in of conftest's FF++ tree) as "fake", through the offline MobileNetV2."""

from __future__ import annotations

import io
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
import timm
import torch
import yaml
from logcapture import dfpipe_lines
from PIL import Image
from torch import nn

from dfpipe import config as dfconfig
from dfpipe.data.shards import write_split
from dfpipe.evaluation import probes
from dfpipe.evaluation.probes import build, classifiers, report
from dfpipe.models import weights

SIZE = 96  # backbone input: small keeps the CPU forward passes quick


def _frames(carphone, vf: str) -> np.ndarray:
    raw = subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-i",
            str(carphone),
            "-vf",
            f"{vf},crop=128:128:24:8",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-",
        ],
        check=True,
        capture_output=True,
    ).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, 128, 128, 3)


@pytest.fixture(scope="module")
def crops(carphone) -> dict[str, tuple[np.ndarray, pd.DataFrame]]:
    """Per split, 30 real and 30 "fake" 128² crops (train: even frames 0–58, val: odd ones, test: 60–118) with
    metadata."""
    real, fake = _frames(carphone, "null"), _frames(carphone, "hue=h=40")
    out = {}
    for split, frames in (("train", range(0, 60, 2)), ("val", range(1, 60, 2)), ("test", range(60, 120, 2))):
        idx = list(frames)
        images = np.concatenate([real[idx], fake[idx]])
        meta = pd.DataFrame(
            {
                "label": [0] * len(idx) + [1] * len(idx),
                "method": ["original"] * len(idx) + ["hue"] * len(idx),
                "video_id": [f"f{i:03d}" for i in idx] * 2,
                "frame_index": idx * 2,
            }
        )
        out[split] = (images, meta)
    return out


@pytest.fixture(scope="module")
def spec() -> probes.BackboneSpec:
    return probes.backbone_spec("mobilenetv2", {"input_size": SIZE})


@pytest.fixture(scope="module")
def features(crops, spec, tmp_path_factory) -> dict[str, probes.FeatureSet]:
    cache = tmp_path_factory.mktemp("features")
    return {
        split: probes.array_features(spec, images, meta, dataset="carphone", split=split, cache_dir=cache)
        for split, (images, meta) in crops.items()
    }


def test_features_are_the_backbones_pooled_output(features, crops, spec):
    """One row per crop; equal to a plain forward of the offline ImageNet weights on the same pixels."""
    train = features["train"]
    assert train.features.shape == (60, 1280) and train.features.dtype == np.float32
    assert train.info["weights_source"].startswith("packaged file mobilenet_v2")
    backbone = probes.build_backbone(spec)
    x = probes.normalise(probes.resize_batch(crops["train"][0][:4], SIZE), backbone.mean, backbone.std)
    with torch.inference_mode():
        direct = backbone.module(x).numpy()
    np.testing.assert_allclose(train.features[:4], direct, rtol=1e-4, atol=1e-4)
    assert list(train.meta["label"]) == list(crops["train"][1]["label"])


@pytest.mark.parametrize("name", probes.CLASSIFIERS)
def test_every_classifier_separates_real_features(features, name):
    """Each of the twelve classifiers fits the real features and ranks the test crops above chance."""
    from threadpoolctl import threadpool_limits

    train, test = features["train"], features["test"]
    red = probes.Reduction("none").fit(train.features)
    with threadpool_limits(1):  # as probe_table fits (QDA's eigendecompositions crawl on contended threads)
        clf = probes.make_classifier(name).fit(red.transform(train.features), train.labels)
    scores, how = probes.fake_scores(clf, red.transform(test.features))
    assert how == ("decision_function" if name == "svm" else "predict_proba")
    m = probes.evaluate_scores(
        test.labels,
        scores,
        clf.predict(red.transform(test.features)),
        test.meta["video_key"].to_numpy(),
        n_boot=50,
        seed=0,
    )
    # one unpruned tree on 60 samples × 1280 features is the weakest learner; the rest clear 0.75
    assert m["auc"] > (0.6 if name == "decision_tree" else 0.75), (name, m)
    assert 0 <= m["auc_lo"] <= m["auc"] <= m["auc_hi"] <= 1


def test_the_schema_offers_exactly_the_registered_classifiers():
    """A classifier is one classifiers.REGISTRY entry plus its name in the schema's probes.classifiers enum:
    neither without the other."""
    schema = yaml.safe_load(dfconfig.SCHEMA_PATH.read_text())
    enum = schema["properties"]["probes"]["properties"]["classifiers"]["items"]["enum"]
    assert set(enum) == set(classifiers.REGISTRY) == set(probes.CLASSIFIERS)


def test_scores_match_dfpipe_metrics():
    """evaluate_scores' ACC, balanced ACC and AUC equal dfpipe.evaluation.metrics.binary_metrics with video weights (frames
    of one video weigh 1 together), also with one class only."""
    from dfpipe.evaluation.metrics import binary_metrics, video_weights

    rng = np.random.default_rng(0)
    videos = np.repeat(np.arange(24), np.arange(24) % 4 + 1)[:60]  # 1 to 4 frames per video: weights matter
    keys = np.array([f"v{v}" for v in videos])
    labels = (videos % 3 == 0).astype(int)  # a third of the videos fake
    scores = rng.random(60) + 0.3 * labels
    predicted = (rng.random(60) < 0.5).astype(int)
    got = probes.evaluate_scores(labels, scores, predicted, keys, n_boot=0, seed=0)
    w = video_weights(keys)
    ranked, decided = binary_metrics(labels, scores, weights=w), binary_metrics(labels, predicted * 1.0, weights=w)
    assert got["auc"] == pytest.approx(ranked["auc"]) and got["acc"] == pytest.approx(decided["acc_05"])
    assert got["bacc"] == pytest.approx(decided["bacc_05"]) and (got["n"], got["n_pos"]) == (60, int(labels.sum()))
    one = probes.evaluate_scores(
        labels[labels == 0], scores[labels == 0], predicted[labels == 0], keys[labels == 0], n_boot=10, seed=0
    )
    assert np.isnan(one["auc"]) and np.isnan(one["auc_lo"])
    assert one["bacc"] == pytest.approx(binary_metrics(labels[labels == 0], predicted[labels == 0] * 1.0)["bacc_05"])
    # at a validation threshold: binary_metrics' acc_val / bacc_val on the scores; NaN without one
    at = probes.evaluate_scores(labels, scores, predicted, keys, n_boot=0, seed=0, threshold=0.6)
    expected = binary_metrics(labels, scores, threshold_val=0.6, weights=w)
    assert at["acc_val"] == pytest.approx(expected["acc_val"]) and at["bacc_val"] == pytest.approx(expected["bacc_val"])
    assert at["threshold_val"] == 0.6 and at["acc_val"] != pytest.approx(got["acc"])
    assert np.isnan(got["acc_val"]) and np.isnan(got["bacc_val"]) and np.isnan(got["threshold_val"])


def test_decision_function_only_classifier_is_scored_not_dropped(features):
    """LinearSVC has no predict_proba: its decision_function orients towards label 1 and gives the AUC."""
    from sklearn.svm import LinearSVC

    train, test = features["train"], features["test"]
    red = probes.Reduction("pca", components=8).fit(train.features)
    clf = LinearSVC().fit(red.transform(train.features), train.labels)
    assert not hasattr(clf, "predict_proba")
    scores, how = probes.fake_scores(clf, red.transform(test.features))
    assert how == "decision_function"
    flipped, _ = probes.fake_scores(
        LinearSVC().fit(red.transform(train.features), 1 - train.labels), red.transform(test.features)
    )
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(test.labels, scores) > 0.75
    assert roc_auc_score(1 - test.labels, flipped) > 0.75  # oriented to its own label 1, whatever classes_ says

    class NoScores:
        classes_ = np.array([0, 1])

    with pytest.raises(TypeError, match="neither predict_proba nor decision_function"):
        probes.fake_scores(NoScores(), test.features)


@pytest.mark.parametrize("kind", probes.REDUCTIONS)
def test_reductions_fit_on_train_only(features, kind):
    """none keeps the width, PCA and the autoencoder reduce it; a fit depends on the train features alone, is
    deterministic, and the reduced features still separate the classes."""
    train, test = features["train"], features["test"]
    a = probes.Reduction(kind, components=8, epochs=30).fit(train.features)
    b = probes.Reduction(kind, components=8, epochs=30).fit(train.features)
    za, zb = a.transform(test.features), b.transform(test.features)
    assert za.shape == (len(test.features), 1280 if kind == "none" else 8)
    np.testing.assert_allclose(za, zb, rtol=1e-5, atol=1e-5)
    clf = probes.make_classifier("linear_probe").fit(a.transform(train.features), train.labels)
    scores, _ = probes.fake_scores(clf, za)
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(test.labels, scores) > 0.75
    if kind != "none":  # another train set gives another fit: nothing of the test features leaks in
        c = probes.Reduction(kind, components=8, epochs=30).fit(train.features[::-1][:20])
        assert not np.allclose(c.transform(test.features), za)


def test_transforms_change_pixels_deterministically(crops, spec, tmp_path):
    """blur/jitter/both change the features, the same seed gives the same features, and `none` is untouched."""
    images, meta = crops["test"]
    images, meta = images[::4], meta.iloc[::4]
    got = {
        t: probes.array_features(
            spec, images, meta, dataset="d", split="test", cache_dir=tmp_path, transform=t, seed=3
        ).features
        for t in probes.TRANSFORMS
    }
    for t in ("blur", "jitter", "both"):
        assert not np.allclose(got[t], got["none"]), t
    again = probes.array_features(
        spec, images, meta, dataset="d2", split="test", cache_dir=tmp_path, transform="both", seed=3
    ).features
    np.testing.assert_array_equal(again, got["both"])


def _shards(crops, root, quality=77):
    for split, (images, meta) in crops.items():
        jpegs = []
        for img in images:
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="JPEG", quality=quality)
            jpegs.append(buf.getvalue())
        table = meta.assign(key=meta["method"] + "/" + meta["video_id"], split=split, quality=quality, jpeg=jpegs)
        write_split([table], quality, split, 2, root / f"q{quality}")
    return {split: sorted((root / f"q{quality}").glob(f"{split}-*.tar")) for split in crops}


def one_probe(get, classifier: str = "lda", **extra) -> pd.DataFrame:
    """The probe table of one classifier on mobilenetv2 features at q77, no reduction, no transform."""
    return probes.probe_table(
        get,
        backbones=["mobilenetv2"],
        train_qualities=[77],
        test_qualities=[77],
        reductions=["none"],
        classifiers=[classifier],
        transforms=["none"],
        n_boot=0,
        **extra,
    )


def test_shard_features_cached_and_reused_without_the_backbone(crops, spec, tmp_path, monkeypatch):
    """Features from real shards are cached (.npy + .parquet + manifest); a second call and a probe table over
    them load the files without building the backbone; other shard bytes (another fingerprint) compute afresh."""
    shards = _shards(crops, tmp_path / "shards")
    cache = tmp_path / "cache"
    get = probes.shard_getter(
        [s for split in shards.values() for s in split], dataset="demo", cache_dir=cache, specs={"mobilenetv2": spec}
    )
    first = get("mobilenetv2", 77, "test", "none")
    get("mobilenetv2", 77, "train", "none")
    get("mobilenetv2", 77, "val", "none")
    npy, parquet, manifest = probes.cache_paths(cache, "demo", "mobilenetv2", 77, "test", "none")
    assert npy.is_file() and parquet.is_file() and manifest.is_file()
    assert first.features.shape == (60, 1280) and set(first.meta["label"]) == {0, 1}
    assert first.meta["video_key"].str.startswith(("original/q77/", "hue/q77/")).all()
    assert str(tmp_path) not in manifest.read_text()  # nothing absolute in the artefact

    def no_backbone(*_a, **_k):
        raise AssertionError("backbone built although the cache holds these features")

    probes.BUILT.clear()  # no backbone in memory either: the second call must come from the files
    monkeypatch.setattr(build, "build_backbone", no_backbone)
    second = get("mobilenetv2", 77, "test", "none")
    np.testing.assert_array_equal(second.features, first.features)
    pd.testing.assert_frame_equal(second.meta, first.meta)
    table = one_probe(get)
    assert table["auc"].iloc[0] > 0.75

    changed = _shards({"test": (crops["test"][0][::-1].copy(), crops["test"][1])}, tmp_path / "shards2")
    with pytest.raises(AssertionError, match="backbone built"):
        probes.shard_features(spec, changed["test"], dataset="demo", quality=77, split="test", cache_dir=cache)
    with pytest.raises(FileNotFoundError, match=r"q60: no test shards; build them first"):
        get("mobilenetv2", 60, "test", "none")


def test_shard_getter_reads_the_declared_shards_only(crops, spec, tmp_path, monkeypatch):
    """A stale tar beside the declared shards (train-0003.tar, as a larger shards.per_split leaves behind) is never
    read: the getter serves the shards it is given (the rule's inputs), not a glob of their folder."""
    declared = _shards(crops, tmp_path / "shards")
    shutil.copy(declared["train"][0], declared["train"][0].with_name("train-0003.tar"))
    # a tiny stand-in backbone: what is read matters here, not the features
    pooled = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    monkeypatch.setattr(build, "BUILT", {})
    monkeypatch.setattr(
        build, "build_backbone", lambda s, device: probes.Backbone(s, pooled, 16, (0.5,) * 3, (0.5,) * 3, "stand-in")
    )
    get = probes.shard_getter(
        [s for split in declared.values() for s in split],
        dataset="demo",
        cache_dir=tmp_path / "cache",
        specs={"mobilenetv2": spec},
    )
    train = get("mobilenetv2", 77, "train", "none")
    assert len(train.meta) == len(crops["train"][1])
    assert train.info["fingerprint"] == probes.shards_fingerprint(declared["train"])


def test_weights_from_a_file(tmp_path, crops):
    """A backbone whose weights come from a file (as CLIP/DINO do offline): a small randomly initialised timm
    model saved with torch.save loads exactly; a missing or foreign file names itself and the fix."""
    torch.manual_seed(0)
    model = timm.create_model("resnet10t", num_classes=0)
    path = tmp_path / "resnet10t_random.pth"
    torch.save(model.state_dict(), path)
    spec = probes.backbone_spec("dino_resnet50", {"model": "resnet10t", "weights": str(path), "input_size": 64})
    backbone = probes.build_backbone(spec)
    assert backbone.weights_source.startswith("file:resnet10t_random.pth:sha256:")
    x = probes.normalise(probes.resize_batch(crops["test"][0][:3], 64), backbone.mean, backbone.std)
    with torch.inference_mode():
        np.testing.assert_array_equal(backbone.module(x).numpy(), model.eval()(x).numpy())

    missing = probes.backbone_spec("dino_vitb16", {"weights": str(tmp_path / "absent.pth")})
    with pytest.raises(FileNotFoundError, match=r"absent\.pth does not exist; give the weights as a file"):
        probes.build_backbone(missing)
    other = tmp_path / "mobilenet.pth"
    torch.save(timm.create_model("mobilenetv2_050", num_classes=0).state_dict(), other)
    with pytest.raises(ValueError, match="do not fit this model"):
        probes.build_backbone(probes.backbone_spec("x", {"model": "resnet10t", "weights": str(other)}))


def test_input_size_per_backbone():
    """Each backbone at its native size by default (timm's pretrained config; open_clip's model config); the
    config's probes.input_size (`default_input_size`) for backbones that take any size only; an entry's own size
    first. A ViT refuses another size in one line naming the backbone and the key, also where a spec is made
    without backbone_spec (the cache key asks for the size)."""
    size = lambda spec: probes.input_config(spec)[0]  # noqa: E731
    assert probes.backbone_spec("mobilenetv2").input_size is None and size(probes.backbone_spec("mobilenetv2")) == 224
    # the demo's probes (input_size: 128, two CNNs): 128 px as before, so the same cache keys and features
    assert size(probes.backbone_spec("mobilenetv2", default_input_size=128)) == 128
    assert size(probes.backbone_spec("lite0", {"input_size": 96}, default_input_size=128)) == 96
    assert size(probes.backbone_spec("dino_resnet50", {"input_size": None}, default_input_size=160)) == 160
    for vit in ("dino_vitb16", "clip_vitb16"):
        assert size(probes.backbone_spec(vit, default_input_size=128)) == 224
        assert size(probes.backbone_spec(vit, {"input_size": 224})) == 224
        with pytest.raises(
            ValueError, match=rf"^backbone {vit}: input_size 128 does not fit .* takes 224 px only"
        ) as err:
            probes.backbone_spec(vit, {"input_size": 128})
        assert "\n" not in str(err.value) and "remove input_size from its probes.backbones entry" in str(err.value)
    direct = probes.BackboneSpec("dino_vitb16", "vit_base_patch16_224.dino", "none", input_size=160)
    with pytest.raises(ValueError, match="input_size 160 does not fit"):
        probes.cache_key(direct, "d", 95, "test", "none", 0, "f")


def test_unreachable_weights_say_how_to_give_a_file(monkeypatch, tmp_path):
    """Offline, the DINO URL, the timm hub tag and open_clip's hub tag fail at once with the file hint; CLIP
    without open_clip says how to install it."""
    monkeypatch.setattr(weights, "reachable", lambda *_a, **_k: False)
    with pytest.raises(LookupError, match="unreachable.*give the weights as a file"):
        probes.build_backbone(probes.backbone_spec("dino_resnet50"))
    monkeypatch.setattr(weights, "imagenet", lambda m: (_ for _ in ()).throw(LookupError(f"{m}: hub failed")))
    with pytest.raises(LookupError, match="dino_vitb16.*give the weights as a file"):
        probes.build_backbone(probes.backbone_spec("dino_vitb16"))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))  # no CLIP weights cached here
    with pytest.raises(LookupError, match="clip_vitb16: open_clip could not fetch ViT-B-16 openai.*as a file"):
        probes.build_backbone(probes.backbone_spec("clip_vitb16"))
    monkeypatch.setitem(__import__("sys").modules, "open_clip", None)
    with pytest.raises(ImportError, match="pip install open_clip_torch"):
        probes.build_backbone(probes.backbone_spec("clip_vitb16"))


def test_probe_table_and_plot(features, tmp_path):
    """The table has a row for every combination asked (with a concatenated backbone), AUC intervals, and a
    failing classifier keeps its row with the error; the CSV, markdown and plot are written."""
    store = {("mobilenetv2", 77, s, "none"): fs for s, fs in features.items()}
    half = {k: probes.FeatureSet(v.features[:, :640], v.meta, {"backbone": "half"}) for k, v in store.items()}
    store.update({("half",) + k[1:]: v for k, v in half.items()})

    def get(backbone, quality, split, transform):
        return store[(backbone, quality, split, transform)]

    table = probes.probe_table(
        get,
        backbones=["mobilenetv2", "mobilenetv2+half"],
        train_qualities=[77],
        test_qualities=[77],
        reductions=["none", "pca"],
        classifiers=["lda", "svm", "knn3"],
        transforms=["none"],
        n_boot=50,
        components=8,
    )
    assert len(table) == 2 * 2 * 3
    assert list(table.columns) == probes.PROBE_COLUMNS
    # thresholds chosen on the val split of the training data, one per fitted probe, used on its test scores
    assert table["threshold_val"].notna().all() and table["bacc_val"].between(0.5, 1).all()
    lda = table[(table["backbone"] == "mobilenetv2") & (table["reduction"] == "none") & (table["classifier"] == "lda")]
    clf = probes.make_classifier("lda").fit(features["train"].features, features["train"].labels)
    from dfpipe.evaluation.metrics import choose_threshold, video_weights

    val_keys = features["val"].meta["video_key"].to_numpy()
    val_scores = probes.fake_scores(clf, features["val"].features)[0]
    thr = choose_threshold(features["val"].labels, val_scores, video_weights(val_keys))
    assert lda["threshold_val"].item() == pytest.approx(thr)
    from sklearn.metrics import roc_auc_score

    auc_val = roc_auc_score(features["val"].labels, val_scores, sample_weight=video_weights(val_keys))
    assert lda["auc_val"].item() == pytest.approx(auc_val)
    assert (table["error"] == "").all() and table["auc"].between(0.5, 1).all()
    assert set(table.loc[table["classifier"] == "svm", "score_by"]) == {"decision_function"}
    assert (table["auc_lo"] <= table["auc"]).all() and (table["auc"] <= table["auc_hi"]).all()

    # another dataset's test features (here: the training crops themselves) through test_get
    crossed = one_probe(get, test_get=lambda b, q, s, t: store[(b, q, "train", t)])
    assert crossed["n"].iloc[0] == len(features["train"].labels) and crossed["acc"].iloc[0] == 1.0

    def without_val(backbone, quality, split, transform):  # a test source: train and test shards only
        if split == "val":
            raise FileNotFoundError("no val shards")
        return store[(backbone, quality, split, transform)]

    test_only = one_probe(without_val)
    assert test_only["auc"].notna().all()
    assert test_only[["threshold_val", "acc_val", "bacc_val", "auc_val"]].isna().all(axis=None)

    bad = {
        k: probes.FeatureSet(np.where(np.arange(v.features.shape[1]) == 0, np.nan, v.features), v.meta)
        for k, v in store.items()
        if k[0] == "mobilenetv2"
    }
    with dfpipe_lines() as logged:
        failed = one_probe(lambda b, q, s, t: bad[(b, q, s, t)], "naive_bayes")
    assert len(failed) == 1 and failed["error"].iloc[0].startswith("fit: ValueError") and logged

    written = probes.write_probe_results(pd.concat([table, failed], ignore_index=True), tmp_path)
    assert [p.name for p in written] == ["probe_table.csv", "probe_table.md", "probe_effects.png"]
    assert all(p.stat().st_size > 0 for p in written)
    assert "rows without metrics" in (tmp_path / "probe_table.md").read_text()


def _effects_table() -> pd.DataFrame:
    """A probe table whose AUC is 0.9, less 0.2 for a transformed test image, of which training with the same
    transform wins back 0.15, plus a small per-classifier offset."""
    rows = []
    for backbone in ("mobilenetv2", "lite0"):
        for red in ("none", "pca"):
            for k, clf in enumerate(("lda", "svm", "knn3")):
                for tt in ("none", "blur", "jitter", "both"):
                    for te in ("none", "blur", "jitter", "both"):
                        auc = 0.9 - 0.2 * (te != "none") + 0.15 * (te != "none" and te == tt) + 0.01 * (k - 1)
                        rows.append(
                            {
                                "backbone": backbone,
                                "reduction": red,
                                "classifier": clf,
                                "train_transform": tt,
                                "test_transform": te,
                                "train_quality": 95,
                                "test_quality": 95,
                                "auc": auc,
                            }
                        )
    return pd.DataFrame(rows).reindex(columns=probes.PROBE_COLUMNS)


def test_effects_plot_shows_the_test_transform_per_train_transform(monkeypatch, tmp_path):
    """A third panel gives the mean test AUC of every train transform × test transform; the other two panels
    stay on untransformed test images."""
    figures = []
    monkeypatch.setattr(report, "save_figure", lambda fig, path: figures.append(fig))
    probes.plot_probe_effects(_effects_table(), tmp_path / "effects.png")
    clf_ax, backbone_ax, grid_ax = figures[0].axes[:3]
    assert grid_ax.get_xlabel() == "test transform" and grid_ax.get_ylabel() == "train transform"
    assert [t.get_text() for t in grid_ax.get_yticklabels()] == ["none", "blur", "jitter", "both"]
    assert [t.get_text() for t in grid_ax.get_xticklabels()] == ["none", "blur", "jitter", "both"]
    cells = [t.get_text() for t in grid_ax.texts]
    expected = [
        0.9 if te == "none" else 0.85 if te == tt else 0.7 for tt in probes.TRANSFORMS for te in probes.TRANSFORMS
    ]
    assert cells == [f"{v:.3f}" for v in expected]
    # the bars average untransformed test images only: 0.9 for every backbone
    heights = [b.get_height() for b in backbone_ax.patches]
    assert heights and np.allclose(heights, 0.9)


def test_backbones_asked_for_in_turn_are_built_once(monkeypatch):
    """A combination (a+b) asks for its parts in turn for every split, quality and transform: each is built once."""
    built = []
    monkeypatch.setattr(build, "build_backbone", lambda spec, device: built.append(spec.name) or spec.name)
    monkeypatch.setattr(build, "BUILT", {})
    specs = [probes.backbone_spec(n) for n in ("mobilenetv2", "lite0", "mobilenetv2", "lite0", "mobilenetv2")]
    assert [probes.shared_backbone(s) for s in specs] == [s.name for s in specs]
    assert built == ["mobilenetv2", "lite0"]
    for name in ("a", "b", "c"):  # a fourth backbone evicts the least recently used
        probes.shared_backbone(probes.backbone_spec(name, {"model": "resnet18", "weights": "none"}))
    assert len(build.BUILT) == probes.KEEP_BUILT and built[-3:] == ["a", "b", "c"]


def _synthetic(seed: int, videos: int = 24, frames: int = 3, dims: int = 6) -> probes.FeatureSet:
    """`videos` videos of `frames` frames, half fake; the fakes' first features are shifted, weakly."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(videos) % 2, frames)
    x = rng.normal(size=(labels.size, dims)).astype(np.float32)
    x[:, :2] += 0.8 * labels[:, None]
    meta = pd.DataFrame(
        {
            "video_key": np.repeat([f"v{seed}_{i:02d}" for i in range(videos)], frames),
            "label": labels,
            "frame_index": np.tile(np.arange(frames), videos),
        }
    )
    return probes.FeatureSet(x, meta)


def _shown(md: str) -> list[tuple[str, ...]]:
    """The settings (the first seven cells) of each row in the markdown's first table."""
    table = md.split("\n\n")[1]
    return [tuple(c.strip() for c in line.strip("|").split("|")[:7]) for line in table.splitlines()[2:]]


def test_shown_probes_and_thresholds_do_not_depend_on_test_labels(tmp_path):
    """Nothing is chosen on test data: shuffling the test videos' labels (every frame keeps its video's label)
    leaves each probe's threshold and the rows the markdown shows, in their order, as they were."""
    splits = {"train": _synthetic(1), "val": _synthetic(2)}
    tests = {q: _synthetic(3 + q) for q in (0, 1)}

    def shuffled(fs: probes.FeatureSet, seed: int) -> probes.FeatureSet:
        video = fs.meta["video_key"].to_numpy()
        first = fs.meta.groupby("video_key", sort=False)["label"].first()
        relabel = dict(zip(first.index, np.random.default_rng(seed).permutation(first.to_numpy())))
        return probes.FeatureSet(fs.features, fs.meta.assign(label=[relabel[v] for v in video]))

    def table(test_sets):
        def get(backbone, quality, split, transform):
            return test_sets[quality] if split == "test" else splits[split]

        return probes.probe_table(
            get,
            backbones=["synthetic"],
            train_qualities=[0],
            test_qualities=[0, 1],
            reductions=["none", "pca"],
            classifiers=["lda", "naive_bayes", "knn3", "knn5", "decision_tree"],
            transforms=["none"],
            components=3,
            n_boot=0,
        )

    shown, thresholds, aucs = [], [], []
    for seed in (None, 0, 1):
        t = table(tests if seed is None else {q: shuffled(fs, 10 * seed + q) for q, fs in tests.items()})
        out = tmp_path / str(seed)
        probes.write_probe_results(t, out, top=4)
        shown.append(_shown((out / "probe_table.md").read_text()))
        thresholds.append(t["threshold_val"].to_numpy())
        aucs.append(t["auc"].to_numpy())
    assert len(shown[0]) == 4 and np.isfinite(thresholds[0]).all()
    assert not np.allclose(aucs[1], aucs[0]) and not np.allclose(aucs[2], aucs[0])  # the shuffles do matter
    for other in thresholds[1:]:
        np.testing.assert_array_equal(other, thresholds[0])
    for other in shown[1:]:
        assert other == shown[0]
    # the four best validation AUCs are the rows shown, in order (ties in table order)
    best = t.assign(key=-t["auc_val"]).sort_values("key", kind="stable").head(4)
    assert [tuple(str(v) for v in r) for r in best.iloc[:, :7].itertuples(index=False)] == shown[0]


def _expected_auc(train: probes.FeatureSet, test: probes.FeatureSet, reduction: str = "none") -> float:
    """The AUC of LDA fitted on `train` (reduced by a fit on `train` alone) and scored on `test`, by hand."""
    from dfpipe.evaluation.metrics import video_weights, weighted_aucs

    reducer = probes.Reduction(reduction, components=3).fit(train.features)
    clf = probes.make_classifier("lda").fit(reducer.transform(train.features), train.labels)
    scores = probes.fake_scores(clf, reducer.transform(test.features))[0]
    w = video_weights(test.meta["video_key"].to_numpy())
    return float(weighted_aucs(test.labels, scores, w[None])[0])


def test_probe_reduction_is_fitted_on_the_training_features_only(monkeypatch):
    """Catches a reduction fitted on train+test (or test) features inside probe_table."""
    splits = {"train": _synthetic(1), "val": _synthetic(2), "test": _synthetic(3)}
    splits["test"].features[:, 3] *= 50  # a direction only the test set varies in: PCA on it would pick it
    fitted = []
    fit = probes.Reduction.fit
    monkeypatch.setattr(probes.Reduction, "fit", lambda self, x: fitted.append(x.copy()) or fit(self, x))
    table = probes.probe_table(
        lambda b, q, split, t: splits[split],
        backbones=["synthetic"],
        train_qualities=[0],
        test_qualities=[0],
        reductions=["pca", "autoencoder"],
        classifiers=["lda"],
        transforms=["none"],
        components=3,
        ae_epochs=2,
        n_boot=0,
    )
    assert len(fitted) == 2
    for x in fitted:
        np.testing.assert_array_equal(x, splits["train"].features)
    monkeypatch.undo()
    pca = table[table["reduction"] == "pca"]
    assert pca["auc"].iloc[0] == pytest.approx(_expected_auc(splits["train"], splits["test"], "pca"))


def test_probe_test_features_use_the_test_transform():
    """Catches test features fetched with the training transform (or none) instead of the test transform."""
    sets = {("train", t): _synthetic(10 + i) for i, t in enumerate(("blur", "jitter"))}
    sets.update({("test", t): _synthetic(20 + i) for i, t in enumerate(("none", "blur", "jitter", "both"))})
    sets["val", "none"] = _synthetic(30)
    calls = []

    def get(backbone, quality, split, transform):
        calls.append((split, transform))
        return sets[split, transform]

    table = probes.probe_table(
        get,
        backbones=["synthetic"],
        train_qualities=[0],
        test_qualities=[0],
        reductions=["none"],
        classifiers=["lda"],
        transforms=["blur", "jitter"],
        test_transforms=["none", "both"],
        n_boot=0,
    )
    assert {t for s, t in calls if s == "test"} == {"none", "both"}
    assert len(table) == 4
    for row in table.itertuples():
        expected = _expected_auc(sets["train", row.train_transform], sets["test", row.test_transform])
        assert row.auc == pytest.approx(expected), (row.train_transform, row.test_transform)


def test_probe_scores_weigh_and_resample_whole_videos():
    """Catches evaluate_scores dropping its video weights or its bootstrap groups: frames of constant-score
    videos of 1 to 10 frames score as the videos themselves."""
    rng = np.random.default_rng(0)
    labels, scores = np.arange(12) % 2, rng.uniform(size=12) + 0.2 * (np.arange(12) % 2)
    frames = 1 + 9 * (np.arange(12) // 2 % 2) + np.arange(12) // 4
    keys = np.repeat([f"v{i:02d}" for i in range(12)], frames)
    by_frame = probes.evaluate_scores(
        np.repeat(labels, frames), np.repeat(scores, frames), np.repeat(scores > 0.6, frames), keys, 200, 0, 0.6
    )
    by_video = probes.evaluate_scores(labels, scores, scores > 0.6, np.unique(keys), 200, 0, 0.6)
    for k in ("acc", "bacc", "acc_val", "bacc_val", "auc", "auc_lo", "auc_hi"):
        assert by_frame[k] == pytest.approx(by_video[k]), k
