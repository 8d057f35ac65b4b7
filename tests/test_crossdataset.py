"""Cross-dataset helpers on small real tables: routed test qualities, the union of datasets and detector rows."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from logcapture import dfpipe_lines

from dfpipe.evaluation import crossdataset, probes


def _fs(label_shift: float, n: int = 40) -> probes.FeatureSet:
    rng = np.random.default_rng(0)
    y = np.arange(n) % 2
    x = (rng.normal(size=(n, 6)) + label_shift * y[:, None]).astype(np.float32)
    meta = pd.DataFrame(
        {"video_key": [f"v{i}" for i in range(n)], "method": "m", "video_id": "x", "frame_index": 0, "label": y}
    )
    return probes.FeatureSet(x, meta)


def test_one_fit_scores_the_main_and_the_routed_dataset():
    """A probe fitted once is scored on the main test split and on "name:Q" of another dataset."""
    calls = []

    def main(b, q, split, t):
        calls.append(("main", q, split))
        return _fs(2.0)

    def other(b, q, split, t):
        calls.append(("gan", q, split))
        return _fs(-2.0)  # the opposite direction: a probe from main ranks these backwards

    table = probes.probe_table(
        crossdataset.routed_getter(main, {"gan": other}),
        backbones=["b"],
        train_qualities=[95],
        test_qualities=[95, "gan:95"],
        reductions=["none"],
        classifiers=["linear_probe"],
        transforms=["none"],
        n_boot=0,
    )
    own, routed = crossdataset.split_routed(table)
    assert list(own["test_quality"]) == [95] and own["auc"].iloc[0] > 0.9
    assert list(routed) == ["gan"] and routed["gan"]["auc"].iloc[0] < 0.1
    assert ("gan", 95, "test") in calls and ("gan", 95, "train") not in calls
    rows = crossdataset.probe_rows(routed["gan"], "demo", "gan")
    assert list(rows.columns) == crossdataset.MATRIX_COLUMNS and rows["model"].iloc[0] == "b/none/linear_probe/none"


def _fs_on(column: int, n: int = 40, seed: int = 0, prefix: str = "v") -> probes.FeatureSet:
    """`n` samples, fakes shifted along feature `column` only: a probe learns that one direction."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.normal(size=(n, 4)).astype(np.float32)
    x[:, column] += 3.0 * y
    meta = pd.DataFrame(
        {"video_key": [f"{prefix}{i}" for i in range(n)], "method": "m", "video_id": "x", "frame_index": 0, "label": y}
    )
    return probes.FeatureSet(x, meta)


def test_union_and_every_dataset_trained_probe_cover_the_source_by_source_matrix():
    """Probes trained on each dataset and on their union (train and val features of both pooled) are each fitted
    once per setting and scored on every dataset's test split; the matrix rows cover every (train, test) pair."""
    calls = []

    def dataset(name, column, has_val=True):
        def get(b, q, split, t):
            if split == "val" and not has_val:
                raise FileNotFoundError("no val shards")
            calls.append((name, b, q, split))
            # the same video keys in both datasets: the union must keep their videos apart
            return _fs_on(column, n={"train": 40, "val": 20, "test": 30}[split], seed=len(split) + column)

        return get

    datasets = {"demo": dataset("demo", 0), "gan": dataset("gan", 1), "faces": dataset("faces", 1, has_val=False)}

    union = crossdataset.union_getter({k: datasets[k] for k in ("demo", "gan", "faces")})
    pooled = union("b", 95, "train", "none")
    parts = [datasets[k]("b", 95, "train", "none") for k in ("demo", "gan", "faces")]
    assert np.array_equal(pooled.features, np.vstack([p.features for p in parts]))
    assert pooled.labels.tolist() == [y for p in parts for y in p.labels]
    assert pooled.meta["video_key"].nunique() == 120 and pooled.meta["video_key"].iloc[40] == "gan/v0"
    assert len(union("b", 95, "val", "none").meta) == 40  # faces has no val split: the others' val serves
    with pytest.raises(ValueError, match="no test split"):
        union("b", 95, "test", "none")

    datasets.pop("faces")
    settings = dict(
        backbones=["b"],
        train_qualities=[95],
        reductions=["none"],
        classifiers=["linear_probe"],
        transforms=["none"],
        n_boot=0,
    )
    tables, rows = {}, []
    trainers = [*datasets.items(), (crossdataset.UNION, crossdataset.union_getter(datasets))]
    for name, get in trainers:
        own = name if name in datasets else None
        calls.clear()
        tables[name] = probes.probe_table(
            crossdataset.routed_getter(get, datasets),
            test_qualities=crossdataset.routed_qualities([95, 50], datasets, own=own),
            **settings,
        )
        # one fit per setting: the training data read once, every dataset's test split at each quality
        assert sorted(c for c in calls if c[3] == "test") == [(d, "b", q, "test") for d in datasets for q in (50, 95)]
        trained = {c[0] for c in calls if c[3] == "train"}
        assert trained == (set(datasets) if own is None else {name})
        rows.append(crossdataset.routed_probe_rows(tables[name], name))
    matrix = pd.concat(rows, ignore_index=True)
    assert list(matrix.columns) == crossdataset.MATRIX_COLUMNS
    pairs = matrix.groupby(["train_dataset", "test_dataset"])["test_quality"].apply(sorted).to_dict()
    assert pairs == {(tr, te): [50, 95] for tr in ("demo", "gan", "union") for te in ("demo", "gan")}
    auc = matrix.groupby(["train_dataset", "test_dataset"])["auc"].mean()
    # each dataset's probe knows its own direction only; the union's probe learnt both
    assert auc["demo", "demo"] > 0.9 and auc["gan", "gan"] > 0.9
    assert abs(auc["demo", "gan"] - 0.5) < 0.25 and abs(auc["gan", "demo"] - 0.5) < 0.25
    assert auc["union", "demo"] > auc["gan", "demo"] + 0.2 and auc["union", "gan"] > auc["demo", "gan"] + 0.2
    assert auc["union", "demo"] > 0.8 and auc["union", "gan"] > 0.8
    assert tables[crossdataset.UNION]["auc_val"].notna().all()


def test_detector_rows_use_the_validation_threshold():
    """Balanced ACC of a detector uses the threshold its own validation split gives, on both datasets."""

    def part(split, scores, labels, q=95):
        return pd.DataFrame(
            {
                "split": split,
                "test_quality": q,
                "train_quality": 95,
                "label": labels,
                "score": scores,
                "video_key": [f"{split}{i}" for i in range(len(labels))],
            }
        )

    own = pd.concat(
        [part("val", [0.7, 0.8, 0.9, 0.95], [0, 0, 1, 1]), part("test", [0.6, 0.75, 0.92, 0.99], [0, 0, 1, 1])]
    )
    # at 0.5 these would be perfect; below the val threshold (~0.85) all are called real: balanced ACC 0.5, AUC 1
    cross = part("test", [0.3, 0.4, 0.7, 0.8], [0, 0, 1, 1]).drop(columns="split")
    rows = pd.DataFrame(crossdataset.detector_rows(own, cross, "demo", "gan", "m@q95"))
    assert list(rows["test_dataset"]) == ["demo", "gan"]
    assert rows["auc"].tolist() == [1.0, 1.0] and rows["bacc"].tolist() == [1.0, 0.5]


def _detector_tables(n_videos: int, separation: float, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Own predictions (val and test) and a test source's scores: `n_videos` videos of each class, 4 frames each;
    a fake's scores are shifted up by `separation` (0: random scores)."""
    rng = np.random.default_rng(seed)

    def part(name: str) -> pd.DataFrame:
        video = np.repeat(np.arange(2 * n_videos), 4)
        label = (video % 2).astype(int)
        return pd.DataFrame(
            {
                "split": name,
                "test_quality": 95,
                "train_quality": 95,
                "label": label,
                "score": rng.normal(size=video.size) + separation * label,
                "video_key": [f"{name}{v}" for v in video],
            }
        )

    own = pd.concat([part("val"), part("test").assign(score=lambda t: t["score"] + 3.0 * t["label"])])
    return own, part("cross").drop(columns="split")


def test_matrix_rows_carry_n_and_a_video_bootstrap_interval(monkeypatch, tmp_path):
    """Every matrix row says how many samples it scored and how sure its AUC is (a bootstrap over videos): the
    interval holds the AUC, narrows with more videos, holds 0.5 for random scores; the heat map writes it."""
    rows = {}
    for n_videos, separation in ((6, 0.0), (6, 1.0), (120, 1.0)):
        own, cross = _detector_tables(n_videos, separation)
        found = pd.DataFrame(crossdataset.detector_rows(own, cross, "demo", "gan", "m@q95", n_boot=300))
        assert list(found.columns) == crossdataset.MATRIX_COLUMNS
        rows[n_videos, separation] = found.set_index("test_dataset").loc["gan"]
    for row in rows.values():
        assert row["auc_lo"] <= row["auc"] <= row["auc_hi"]
    few, many = rows[6, 1.0], rows[120, 1.0]
    assert (few["n"], few["n_pos"], few["n_neg"]) == (48, 24, 24) and many["n"] == 960
    assert many["auc_hi"] - many["auc_lo"] < (few["auc_hi"] - few["auc_lo"]) / 2
    assert rows[6, 0.0]["auc_lo"] < 0.5 < rows[6, 0.0]["auc_hi"]
    assert many["auc_lo"] > 0.5

    # probe rows keep the probe table's interval and class counts
    probe_table = pd.DataFrame(
        {
            **{c: ["b", "none", "svm", "none", "none"][i] for i, c in enumerate(probes.PROBE_COLUMNS[:5])},
            "train_quality": [95],
            "test_quality": [95],
            "n": [40],
            "n_pos": [30],
            "n_neg": [10],
            "auc": [0.7],
            "auc_lo": [0.55],
            "auc_hi": [0.85],
            "bacc": [0.6],
        }
    )
    probe = crossdataset.probe_rows(probe_table, "demo", "gan").iloc[0]
    assert (probe["n_pos"], probe["n_neg"], probe["auc_lo"], probe["auc_hi"]) == (30, 10, 0.55, 0.85)

    # the heat map: one model in a cell shows its interval; a cell whose every interval holds 0.5 is hatched
    matrix = pd.concat(
        [pd.DataFrame([rows[6, 0.0]]).assign(test_quality=95), pd.DataFrame([rows[120, 1.0]]).assign(test_quality=50)]
    ).reset_index(drop=True)
    matrix["test_dataset"] = "gan"
    figures = []
    from dfpipe.evaluation import tables

    monkeypatch.setattr(tables, "save_figure", lambda fig, path: figures.append(fig))
    crossdataset.plot_matrix(matrix, tmp_path / "m.png")
    (ax, *_) = figures[0].axes
    texts = [t.get_text() for t in ax.texts]
    chance = rows[6, 0.0]
    assert any(f"[{chance['auc_lo']:.2f}, {chance['auc_hi']:.2f}]" in t for t in texts), texts
    assert [p.get_hatch() for p in ax.patches if p.get_hatch()], "the cell whose interval holds 0.5 is not marked"


def test_detector_threshold_from_val_not_test_changes_bacc():
    """Catches the detector rows' threshold chosen on the test split instead of the validation split."""

    def part(split, scores):
        return pd.DataFrame(
            {
                "split": split,
                "test_quality": 95,
                "train_quality": 95,
                "label": [0, 0, 1, 1],
                "score": scores,
                "video_key": [f"{split}{i}" for i in range(4)],
            }
        )

    # val gives a threshold of 0.4, test one of 0.7: each calls the other's real images fake or its fakes real
    own = pd.concat([part("val", [0.1, 0.2, 0.6, 0.7]), part("test", [0.5, 0.6, 0.8, 0.9])])
    cross = part("cross", [0.3, 0.35, 0.5, 0.6]).drop(columns="split")
    rows = pd.DataFrame(crossdataset.detector_rows(own, cross, "demo", "gan", "m@q95"))
    assert rows["test_dataset"].tolist() == ["demo", "gan"]
    assert rows["auc"].tolist() == [1.0, 1.0] and rows["bacc"].tolist() == [0.5, 1.0]


def test_a_test_sources_val_images_stay_out_of_its_test_split(tmp_path, cjpeg):
    """Val images get their own shard; none of them is scored as a test image."""
    import tarfile

    from PIL import Image

    from dfpipe.data.sources import images

    rows = []
    for i, (label, split) in enumerate([(0, "train"), (1, "train"), (0, "val"), (1, "val"), (0, "test"), (1, "test")]):
        folder = tmp_path / "src" / ("fake/gen" if label else "real")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((48, 48, 3), 40 * i, np.uint8)).save(folder / f"{i}.png")
        rows.append((f"{folder.relative_to(tmp_path / 'src').as_posix()}/{i}.png", split))
    split_file = tmp_path / "splits.json"
    split_file.write_text(
        json.dumps(
            {s: [p.split("/", 1)[1].split("/", 1)[-1] for p, t in rows if t == s] for s in ("train", "val", "test")}
        )
    )
    table = images.scan(tmp_path / "src", split_file=split_file).table
    crossdataset.check_splits(table, "test")
    crossdataset.write_source_shards(table, tmp_path / "src", 90, [], cjpeg, tmp_path / "out")
    keys = {}
    for split in ("val", "test"):
        with tarfile.open(tmp_path / "out" / f"{split}-0000.tar") as tar:
            keys[split] = {m.name.split(".")[0] for m in tar.getmembers()}
    assert len(keys["val"]) == 2 and len(keys["test"]) == 2 and not keys["val"] & keys["test"]


def test_identities_the_main_models_saw_never_reach_a_test_split():
    main = {"000": "train", "001": "train", "002": "val", "003": "val", "004": "test", "005": "test"}
    table = pd.DataFrame(
        {
            "path": [f"real/{i:03d}/0.png" for i in range(8)] + [f"fake/g/{i:03d}/0.png" for i in range(8)],
            "split": ["test"] * 16,
            "label": [0] * 8 + [1] * 8,
        }
    )
    with dfpipe_lines() as messages:
        kept = crossdataset.drop_seen_identities(table, main, "evaluate.test_sources[gan]")
    seen = {i for i, s in main.items() if s != "test"}
    assert not set(crossdataset.identity_of(kept["path"])) & seen
    assert set(crossdataset.identity_of(kept["path"])) == {"004", "005", "006", "007"}
    assert any("8 test images" in m and "'000'" in m for m in messages)


def test_a_test_sources_interval_resamples_its_identities():
    """Images of one person (a GAN-face identity folder) move together in the bootstrap: four identical views
    per identity give the same interval as one view each, where resampling images would narrow it."""
    rng = np.random.default_rng(0)
    n_id = 12
    base = pd.DataFrame(
        {
            "video_id": [f"{i:03d}_0_h{c}" for c in (0, 1) for i in range(n_id)],
            "label": [c for c in (0, 1) for _ in range(n_id)],
            "score": np.r_[rng.normal(0, 1, n_id), rng.normal(0.8, 1, n_id)],
        }
    )
    scan = pd.DataFrame(
        {
            "video_id": base["video_id"],
            "path": [f"{'fake/g' if c else 'real'}/{v[:3]}/0.png" for v, c in zip(base["video_id"], base["label"])],
        }
    )
    identities = crossdataset.image_identities(scan)
    assert identities["003_0_h1"] == "003" == identities["003_0_h0"]

    def rows(table):
        cross = table.assign(test_quality=95, video_key="m/q95/" + table["video_id"])
        own = cross.assign(split="val", train_quality=95)
        preds = pd.concat([own, own.assign(split="test")])
        return crossdataset.detector_rows(preds, cross, "a", "b", "m", n_boot=400, identities=identities)[-1]

    one = rows(base)
    views = pd.concat([base.assign(video_id=base["video_id"] + f"v{k}") for k in range(4)])
    identities.update({f"{v}v{k}": identities[v] for v in base["video_id"] for k in range(4)})
    four = rows(views)
    assert four["n"] == 4 * one["n"] and four["auc"] == pytest.approx(one["auc"])
    width = lambda r: r["auc_hi"] - r["auc_lo"]  # noqa: E731
    assert width(four) == pytest.approx(width(one), rel=0.35)
