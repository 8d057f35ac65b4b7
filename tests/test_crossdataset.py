"""Cross-dataset helpers on small real tables: detector and probe rows of the matrix, test-source splits."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from logcapture import dfpipe_lines

from dfpipe.evaluation import crossdataset, probes


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
    monkeypatch.setattr(crossdataset, "save_figure", lambda fig, path: figures.append(fig))
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

    from dfpipe.evaluation import test_sources
    from dfpipe.evaluation.test_sources import images, shards

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
    test_sources.check_splits(table, "test")
    shards.write_source_shards(table, tmp_path / "src", 90, [], cjpeg, tmp_path / "out")
    keys = {}
    for split in ("val", "test"):
        with tarfile.open(tmp_path / "out" / f"{split}-0000.tar") as tar:
            keys[split] = {m.name.split(".")[0] for m in tar.getmembers()}
    assert len(keys["val"]) == 2 and len(keys["test"]) == 2 and not keys["val"] & keys["test"]


def test_identities_the_main_models_saw_never_reach_a_test_split():
    from dfpipe.evaluation.test_sources import ganfaces

    main = {"000": "train", "001": "train", "002": "val", "003": "val", "004": "test", "005": "test"}
    table = pd.DataFrame(
        {
            "path": [f"real/{i:03d}/0.png" for i in range(8)] + [f"fake/g/{i:03d}/0.png" for i in range(8)],
            "split": ["test"] * 16,
            "label": [0] * 8 + [1] * 8,
        }
    )
    with dfpipe_lines() as messages:
        kept = ganfaces.drop_seen_identities(table, main, "evaluate.test_sources[gan]")
    seen = {i for i, s in main.items() if s != "test"}
    assert not set(ganfaces.identity_of(kept["path"])) & seen
    assert set(ganfaces.identity_of(kept["path"])) == {"004", "005", "006", "007"}
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
