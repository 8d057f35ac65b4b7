"""Result tables, plots and provenance: Table-1 shape, matrices, rebuild from saved predictions, sidecars."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from test_metrics import make_predictions

from dfpipe.config import TABLE_SECTIONS, tables_config, validate
from dfpipe.evaluation.metrics import metric_table, read_predictions
from dfpipe.evaluation.tables import (
    RESULT_FILES,
    accuracy_table,
    auc_table,
    generalization_matrix,
    plot_auc_vs_quality,
    plot_roc,
    plot_tsne_models,
    robustness_matrix,
    to_markdown,
    write_results,
)
from dfpipe.io import write_parquet
from dfpipe.provenance import collect, config_hash

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SETS = ["FF-DF", "FF-F2F", "FF-FS", "FF-NT"]


def both_runs(split: str, seed: int) -> pd.DataFrame:
    """meso4 and effb4 trained on all methods at q95 and q60; meso4 also on Deepfakes and on Face2Face alone."""
    return pd.concat(
        [
            make_predictions(split, seed=seed, n_videos=4, n_frames=3),
            make_predictions(
                split,
                detectors=("meso4",),
                train_qualities=(95,),
                train_methods=("Deepfakes", "Face2Face"),
                seed=seed + 10,
                n_videos=4,
                n_frames=3,
            ),
        ],
        ignore_index=True,
    )


@pytest.fixture(scope="module")
def preds() -> tuple[pd.DataFrame, pd.DataFrame]:
    return both_runs("test", 0), both_runs("val", 1)


@pytest.fixture(scope="module")
def metrics_df(preds) -> pd.DataFrame:
    return metric_table(*preds, n_boot=3)


def _auc(metrics_df: pd.DataFrame, **where) -> float:
    sel = metrics_df
    for col, value in where.items():
        sel = sel[sel[col] == value]
    assert len(sel) == 1, where
    return float(sel["auc"].iloc[0])


def test_auc_table_has_table1_columns_and_avg(metrics_df: pd.DataFrame) -> None:
    table = auc_table(metrics_df)
    per_q = ["all", *SETS, "Avg"]
    assert list(table.columns) == ["detector", "train_quality", *[f"q{q}/{s}" for q in (95, 60) for s in per_q]]
    # Only runs trained on all methods; detectors by name, training quality high to low.
    assert list(zip(table["detector"], table["train_quality"])) == [
        ("effb4", 95),
        ("effb4", 60),
        ("meso4", 95),
        ("meso4", 60),
    ]
    for q in (95, 60):
        assert np.allclose(table[f"q{q}/Avg"], table[[f"q{q}/{s}" for s in SETS]].mean(axis=1))
    row = table.iloc[2]
    assert row["q60/FF-NT"] == _auc(
        metrics_df,
        detector="meso4",
        train_quality=95,
        train_methods="all",
        test_quality=60,
        test_set="FF-NT",
        level="frame",
    )
    video = auc_table(metrics_df, level="video")
    assert video.iloc[2]["q60/all"] == _auc(
        metrics_df,
        detector="meso4",
        train_quality=95,
        train_methods="all",
        test_quality=60,
        test_set="all",
        level="video",
    )
    assert (auc_table(metrics_df, metric="ap").iloc[:, 2:] != table.iloc[:, 2:]).any().any()
    with pytest.raises(ValueError, match="level must be one of"):
        auc_table(metrics_df, level="clip")


def test_avg_is_missing_when_a_method_is_missing(metrics_df: pd.DataFrame) -> None:
    no_nt = metrics_df[metrics_df["test_set"] != "FF-NT"]
    table = auc_table(no_nt)
    assert table["q95/FF-NT"].isna().all() and table["q95/Avg"].isna().all()
    assert table["q95/FF-DF"].notna().all()


def test_accuracy_table_shows_balanced_accuracy(metrics_df: pd.DataFrame) -> None:
    table = accuracy_table(metrics_df, "video")
    assert list(table.columns) == [
        "detector",
        "train_quality",
        "test_quality",
        "acc_05",
        "bacc_05",
        "f1_05",
        "acc_val",
        "bacc_val",
    ]
    assert len(table) == 2 * 2 * 2  # detectors × training qualities × test qualities, trained on all methods
    row = metrics_df[
        (metrics_df["detector"] == "meso4")
        & (metrics_df["train_quality"] == 60)
        & (metrics_df["train_methods"] == "all")
        & (metrics_df["test_quality"] == 95)
        & (metrics_df["test_set"] == "all")
        & (metrics_df["level"] == "video")
    ].iloc[0]
    got = table[(table["detector"] == "meso4") & (table["train_quality"] == 60) & (table["test_quality"] == 95)]
    assert got["bacc_val"].item() == row["bacc_val"] and got["acc_05"].item() == row["acc_05"]


def test_robustness_and_generalization_matrices(metrics_df: pd.DataFrame) -> None:
    rob = robustness_matrix(metrics_df)
    assert list(rob.columns) == ["detector", "train_quality", "q95", "q60"] and len(rob) == 4
    effb4_60 = rob[(rob["detector"] == "effb4") & (rob["train_quality"] == 60)].iloc[0]
    assert effb4_60["q95"] == _auc(
        metrics_df,
        detector="effb4",
        train_quality=60,
        train_methods="all",
        test_quality=95,
        test_set="all",
        level="frame",
    )
    gen = generalization_matrix(metrics_df)
    assert list(gen.columns) == ["detector", "train_quality", "test_quality", "train_methods", *SETS]
    assert list(zip(gen["test_quality"], gen["train_methods"])) == [
        (95, "Deepfakes"),
        (95, "Face2Face"),
        (60, "Deepfakes"),
        (60, "Face2Face"),
    ]
    f2f_q60 = gen.iloc[3]
    assert f2f_q60["FF-DF"] == _auc(
        metrics_df,
        detector="meso4",
        train_quality=95,
        train_methods="Face2Face",
        test_quality=60,
        test_set="FF-DF",
        level="frame",
    )


def test_tables_rebuilt_from_saved_predictions_are_identical(preds, metrics_df, tmp_path: Path) -> None:
    test, val = preds
    paths = {"test": [], "val": []}
    # One parquet per detector × training quality × training methods × test quality, as the predict rule writes.
    for split, table in (("test", test), ("val", val)):
        for key, part in table.groupby(["detector", "train_quality", "train_methods", "test_quality"]):
            path = tmp_path / split / ("_".join(map(str, key)) + ".parquet")
            write_parquet(path, part)
            paths[split].append(path)
    rebuilt = metric_table(read_predictions(paths["test"], "test"), read_predictions(paths["val"], "val"), n_boot=3)
    pd.testing.assert_frame_equal(rebuilt, metrics_df)
    for level in ("frame", "video"):
        pd.testing.assert_frame_equal(auc_table(rebuilt, level), auc_table(metrics_df, level))
    pd.testing.assert_frame_equal(generalization_matrix(rebuilt), generalization_matrix(metrics_df))
    with pytest.raises(ValueError, match=re.escape(f"{paths['test'][-1]}: expected only split 'val'")):
        read_predictions([paths["test"][-1]], "val")


def test_to_markdown() -> None:
    df = pd.DataFrame({"detector": ["meso4", "a|b"], "q77/FF-DF": [0.61234, np.nan], "n": [3, 4]})
    assert to_markdown(df) == (
        "| detector | q77/FF-DF | n |\n| --- | --- | --- |\n| meso4 | 0.6123 | 3 |\n| a\\|b | – | 4 |\n"
    )


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    path = tmp_path / "manifest.parquet"
    path.write_bytes(b"manifest bytes")
    return path


def test_provenance_fields_and_config_hash(manifest: Path, tmp_path: Path) -> None:
    config = validate({})
    prov = collect(config, manifest, "mozjpeg version 5.0.0", ["-sample", "2x2"])
    assert set(prov) == {
        "config_sha256",
        "code_version",
        "cjpeg_version",
        "cjpeg_flags",
        "manifest",
        "manifest_sha256",
        "versions",
    }
    assert prov["manifest"] == "manifest.parquet"  # the name only, never an absolute path
    assert prov["manifest_sha256"] == hashlib.sha256(b"manifest bytes").hexdigest()
    assert prov["cjpeg_flags"] == ["-sample", "2x2"] and prov["cjpeg_version"] == "mozjpeg version 5.0.0"
    assert {"python", "torch", "timm", "scikit-learn"} <= set(prov["versions"])
    assert prov["code_version"] != ""
    changed = validate({"compress": {"qualities": [95, 50]}})
    assert config_hash(changed) != prov["config_sha256"]
    assert config_hash(dict(reversed(list(config.items())))) == prov["config_sha256"]
    assert collect(config, manifest, "v", [], repo=tmp_path)["code_version"] == "unknown"
    with pytest.raises(FileNotFoundError, match="missing.parquet"):
        collect(config, tmp_path / "missing.parquet", "v", [])


REPO = Path(__file__).resolve().parents[1]
# Reads the workflow as Snakemake does (no DAG, no job) and prints the tables rule's params as JSON. The rule
# object is Snakemake's own (WorkflowApi._workflow: not public API, but the params a job is compared by).
RULE_PARAMS = """
import json, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, ResourceSettings

repo, cfg, work = map(Path, sys.argv[1:4])
with SnakemakeApi() as api:
    workflow = api.workflow(
        resource_settings=ResourceSettings(cores=1),
        config_settings=ConfigSettings(configfiles=[cfg]),
        snakefile=repo / "Snakefile",
        workdir=work,
    )
    params = dict(workflow._workflow.get_rule("tables").params.items())
print("PARAMS " + json.dumps(params, sort_keys=True, default=repr))
"""


def tables_params(tmp_path: Path, name: str, config: dict) -> dict:
    work = tmp_path / name
    work.mkdir()
    config = {**config, "output_root": str(work / "data"), "results_dir": str(work / "results")}
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    proc = subprocess.run(
        [sys.executable, "-c", RULE_PARAMS, str(REPO), str(work / "config.yaml"), str(work)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("PARAMS "))
    return json.loads(line.removeprefix("PARAMS "))


def test_test_sources_and_probes_leave_the_tables_params_alone(tmp_path: Path) -> None:
    """The tables rule's params (and so the config hash of the tables' provenance) hold the sections that define
    the tables, not the whole config: adding a test source or probes neither reruns the main tables nor makes
    Snakemake print the whole config as "Params have changed"; a change to the crops does."""
    base = yaml.safe_load((REPO / "config.yaml").read_text())
    extra = {
        **base,
        "evaluate": {**base["evaluate"], "test_sources": [{"name": "gan", "kind": "ganfaces"}]},
        "probes": {"backbones": ["lite0"]},
    }
    before = tables_params(tmp_path, "base", base)
    assert tables_params(tmp_path, "extra", extra) == before
    assert "test_sources" not in before["config"]["evaluate"] and "probes" not in before["config"]
    assert before["config"] == json.loads(json.dumps(tables_config(validate(base))))
    margin = {**base, "faces": {**base["faces"], "margin": 1.5}}
    assert tables_params(tmp_path, "margin", margin)["config"]["faces"]["margin"] == 1.5


def test_tables_config_is_the_sections_that_define_the_tables() -> None:
    config = validate({})
    subset = tables_config(config)
    assert set(subset) == {*TABLE_SECTIONS, "demo"}  # the source in use: the demo's settings make its videos
    # the test sources and the bpp points have their own rules (crossdataset, bitrate)
    assert subset["evaluate"] == {
        k: v for k, v in config["evaluate"].items() if k not in ("test_sources", "bpp_points")
    }
    assert "codecs" not in subset["compress"] and "platform" not in subset["compress"]
    with_sources = validate({"evaluate": {"test_sources": [{"name": "gan", "kind": "ganfaces"}]}, "probes": {}})
    assert config_hash(tables_config(with_sources)) == config_hash(subset)
    for change in ({"faces": {"margin": 1.5}}, {"evaluate": {"bootstrap": 10}}, {"demo": {"seed": 1}}):
        assert config_hash(tables_config(validate(change))) != config_hash(subset), change
    for same in ({"output_root": "elsewhere"}, {"batching": {"videos_per_job": 3}}, {"local": {"root": "/x"}}):
        assert tables_config(validate(same)) == subset, same


def test_code_version_marks_dirty_work_tree(manifest: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (repo / "a.txt").write_text("1")
    subprocess.run([*git, "add", "a.txt"], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    clean = collect({}, manifest, "v", [], repo=repo)["code_version"]
    (repo / "a.txt").write_text("2")
    assert collect({}, manifest, "v", [], repo=repo)["code_version"] == clean + "+dirty"


def test_write_results_with_provenance(metrics_df: pd.DataFrame, manifest: Path, tmp_path: Path) -> None:
    prov = collect(validate({}), manifest, "mozjpeg version 5.0.0", [])
    out = tmp_path / "results"
    written = write_results(metrics_df, out, prov)
    names = {p.name for p in written}
    assert names == {*RESULT_FILES, *(f"{n}.provenance.json" for n in RESULT_FILES), "provenance.json"}
    top = json.loads((out / "provenance.json").read_text())
    assert top["config_sha256"] == prov["config_sha256"] and set(top["files"]) == set(RESULT_FILES)
    for name in RESULT_FILES:
        sidecar = json.loads((out / f"{name}.provenance.json").read_text())
        assert sidecar["sha256"] == hashlib.sha256((out / name).read_bytes()).hexdigest() == top["files"][name]
        assert sidecar["provenance"]["code_version"] == prov["code_version"]
    saved = pd.read_csv(out / "auc_table.csv")
    assert list(saved["level"]) == ["frame"] * 4 + ["video"] * 4
    assert np.allclose(saved.loc[saved["level"] == "frame", "q60/Avg"], auc_table(metrics_df)["q60/Avg"])
    assert len(pd.read_csv(out / "metrics.csv")) == len(metrics_df)
    md = (out / "auc_table.md").read_text()
    assert "## Frame-level AUC" in md and "## Video-level AUC" in md
    # Balanced accuracy beside each accuracy, in metrics.csv and in the markdown.
    header = list(pd.read_csv(out / "metrics.csv").columns)
    assert header.index("bacc_05") == header.index("acc_05") + 1
    assert header.index("bacc_val") == header.index("acc_val") + 1
    assert "## Frame-level accuracy on the whole test set" in md and "| acc_05 | bacc_05 |" in md
    assert f"- config_sha256: {prov['config_sha256']}" in md and "- cjpeg_flags: (none)" in md
    assert not list(out.glob("*.part"))
    # The same metrics give the same bytes in every file, sidecars included: results rebuilt later compare equal.
    again = write_results(metrics_df, tmp_path / "again", collect(validate({}), manifest, "mozjpeg version 5.0.0", []))
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in written]


def test_roc_legend_gives_the_tables_video_weighted_auc(
    metrics_df: pd.DataFrame, preds, tmp_path: Path, monkeypatch
) -> None:
    from dfpipe.evaluation import tables

    test, _ = preds
    nt = test[test["method"] == "NeuralTextures"].assign(frame_index=lambda d: d["frame_index"] + 1)
    doubled = pd.concat([test, nt], ignore_index=True)  # NeuralTextures at twice the frame rate
    legends = []
    monkeypatch.setattr(
        tables,
        "save_figure",
        lambda fig, path: legends.extend(t.get_text() for t in fig.axes[0].get_legend().get_texts()),
    )
    plot_roc(doubled, tmp_path / "roc.png", test_quality=60)
    auc = _auc(
        metrics_df,
        detector="meso4",
        train_quality=95,
        train_methods="all",
        test_quality=60,
        test_set="all",
        level="frame",
    )
    assert f"meso4 train q95 (AUC {auc:.3f})" in legends


def test_plots(metrics_df: pd.DataFrame, preds, tmp_path: Path) -> None:
    plot_auc_vs_quality(metrics_df, tmp_path / "auc.png")
    test, _ = preds
    plot_roc(test, tmp_path / "roc.png", test_quality=60)
    with pytest.raises(ValueError, match="pass test_quality"):
        plot_roc(test, tmp_path / "roc2.png")
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 6)
    features = rng.normal(0, 1, (12, 8)) + 4 * labels[:, None]
    one = pd.DataFrame(
        {
            "split": "test",
            "detector": "m",
            "train_quality": 95,
            "train_methods": "all",
            "test_quality": 95,
            "label": labels,
            "method": np.where(labels == 1, "Deepfakes", "original"),
            "features": list(features),
        }
    )
    choice = pd.DataFrame({"detector": ["m"], "train_quality": [95], "val_auc": [0.9]})
    [embedding] = plot_tsne_models(one, choice, tmp_path / "tsne.png", seed=0)
    assert embedding.shape == (12, 2) and np.isfinite(embedding).all()
    assert np.allclose(embedding, plot_tsne_models(one, choice, tmp_path / "tsne2.png", seed=0)[0])
    for name in ("auc.png", "roc.png", "tsne.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG_MAGIC


def test_auc_plot_gives_each_detector_its_own_colour_and_keeps_the_legend_off_the_panels(
    metrics_df: pd.DataFrame, tmp_path: Path, monkeypatch
) -> None:
    """More detectors than tab10 has colours (12), each trained at two qualities: one panel per training
    quality (high to low), test qualities high to low, a detector's lines in one colour in every panel and no
    two detectors alike; the legend and the title lie inside the figure and clear of every panel."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import to_hex
    from matplotlib.text import Text

    from dfpipe.evaluation import tables

    base = metrics_df[metrics_df["detector"] == "meso4"]
    names = [f"det{i:02d}" for i in range(12)]
    many = pd.concat([base.assign(detector=name) for name in names], ignore_index=True)
    figures = []
    real_save = tables.save_figure
    monkeypatch.setattr(tables, "save_figure", lambda fig, path: figures.append(fig) or real_save(fig, path))
    plot_auc_vs_quality(many, tmp_path / "auc.png")
    assert (tmp_path / "auc.png").read_bytes()[:8] == PNG_MAGIC
    [fig] = figures
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in panels] == ["trained at q95", "trained at q60"]
    assert [t.get_text() for t in panels[0].get_xticklabels()] == ["q95", "q60"]
    colours: dict[str, set] = {}
    for ax in panels:
        for line in ax.get_lines():
            if line.get_label() in names:
                colours.setdefault(line.get_label(), set()).add(to_hex(line.get_color()))
    assert sorted(colours) == names and all(len(c) == 1 for c in colours.values())  # one colour per detector
    assert len({c for cs in colours.values() for c in cs}) == len(names)  # never two detectors alike
    canvas = FigureCanvasAgg(fig)  # closing the figure after saving dropped its canvas
    canvas.draw()
    renderer = canvas.get_renderer()
    [legend] = fig.legends
    legend_box = legend.get_window_extent(renderer)
    assert all(not legend_box.overlaps(ax.get_tightbbox(renderer)) for ax in panels)  # data, ticks, labels
    [title] = [t for t in fig.findobj(Text) if t.get_text() and t.get_text() == fig.get_suptitle()]
    for box in (legend_box, title.get_window_extent(renderer)):
        assert fig.bbox.x0 <= box.x0 <= box.x1 <= fig.bbox.x1 and fig.bbox.y0 <= box.y0 <= box.y1 <= fig.bbox.y1
    assert {t.get_text() for t in legend.get_texts()} == {*names, "chance (0.5)"}


def rigged_predictions() -> pd.DataFrame:
    """Both splits of effb4 and meso4 trained at q95 and q60, with t-SNE features on the test split at the
    model's own quality. On val (own quality) q60 wins: meso4 q60 separates perfectly, effb4 q60 but for one
    fake video, the q95 models are inverted. On test it is the other way round: q95 perfect, q60 inverted."""
    parts = []
    for split, seed in (("test", 0), ("val", 1)):
        table = make_predictions(split, seed=seed, n_videos=4, n_frames=3)
        jitter = 0.01 * table["frame_index"] / 8
        perfect = 0.2 + 0.6 * table["label"] + jitter
        good_q = 60 if split == "val" else 95
        table["score"] = np.where(table["train_quality"] == good_q, perfect, 1.0 - perfect)
        if split == "val":  # effb4 q60: one fake video scored below every real one
            miss = (table["detector"] == "effb4") & (table["video_key"] == "Deepfakes/q60/000_001")
            table.loc[miss, "score"] = 0.05
        parts.append(table)
    preds = pd.concat(parts, ignore_index=True)
    rng = np.random.default_rng(2)
    own = (preds["split"] == "test") & (preds["test_quality"] == preds["train_quality"])
    preds["features"] = None
    preds.loc[own, "features"] = pd.Series(
        list(rng.normal(0, 1, (int(own.sum()), 8)) + 3 * preds.loc[own, "label"].to_numpy()[:, None]),
        index=preds.index[own],
    )
    return preds


def test_tsne_models_are_chosen_on_validation_never_on_test(tmp_path: Path, monkeypatch) -> None:
    """evaluate.tsne_detectors: each named detector at its training quality of highest validation AUC; null: the
    one best model on validation. Permuting the test labels changes nothing; the same data read with the splits
    swapped (a selection on test, as the old rule made it) picks other models, so this test catches that."""
    from dfpipe.evaluation import tables

    preds = rigged_predictions()
    choice = tables.tsne_choice(preds, ["effb4", "meso4"])
    assert list(zip(choice["detector"], choice["train_quality"])) == [("effb4", 60), ("meso4", 60)]
    assert np.allclose(choice["val_auc"], [15 / 16, 1.0])
    best = tables.tsne_choice(preds, None)
    assert list(zip(best["detector"], best["train_quality"])) == [("meso4", 60)]

    test = preds["split"] == "test"
    videos = preds.loc[test, ["video_key", "label"]].drop_duplicates("video_key")
    permuted = dict(zip(videos["video_key"], np.random.default_rng(3).permutation(videos["label"].to_numpy())))
    shuffled = preds.copy()
    shuffled.loc[test, "label"] = shuffled.loc[test, "video_key"].map(permuted)
    assert (shuffled.loc[test, "label"] != preds.loc[test, "label"]).any()
    pd.testing.assert_frame_equal(tables.tsne_choice(shuffled, ["effb4", "meso4"]), choice)
    pd.testing.assert_frame_equal(tables.tsne_choice(shuffled, None), best)

    on_test = preds.assign(split=preds["split"].map({"test": "val", "val": "test"}))
    assert set(tables.tsne_choice(on_test, ["effb4", "meso4"])["train_quality"]) == {95}

    titles = []
    real_save = tables.save_figure
    monkeypatch.setattr(
        tables,
        "save_figure",
        lambda fig, path: titles.extend(ax.get_title() for ax in fig.axes) or real_save(fig, path),
    )
    embeddings = tables.plot_tsne_models(preds, choice, tmp_path / "tsne.png")
    assert [e.shape for e in embeddings] == [(60, 2), (60, 2)]
    assert titles[0].startswith("effb4, train q60\nval AUC 0.937") and titles[1].startswith(
        "meso4, train q60\nval AUC 1.000"
    )
    assert (tmp_path / "tsne.png").read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(ValueError, match=r"evaluate\.tsne_detectors: no validation predictions .* \['xception'\]"):
        tables.tsne_choice(preds, ["xception"])


def test_tsne_of_a_tiny_test_split_keeps_perplexity_below_its_size(tmp_path: Path) -> None:
    """A model with 3 test samples at its own quality still gets a panel (perplexity 1); with 1, an error."""
    from dfpipe.evaluation import tables

    preds = rigged_predictions()
    choice = tables.tsne_choice(preds, ["meso4"])
    own = (preds["split"] == "test") & (preds["detector"] == "meso4") & (preds["train_quality"] == 60)
    own &= preds["test_quality"] == 60
    keep = preds[~own | preds.index.isin(preds.index[own][:3])]
    assert tables.plot_tsne_models(keep, choice, tmp_path / "tsne.png")[0].shape == (3, 2)
    keep = preds[~own | preds.index.isin(preds.index[own][:1])]
    with pytest.raises(ValueError, match="meso4 trained at q60 has 1 test samples"):
        tables.plot_tsne_models(keep, choice, tmp_path / "tsne.png")


def test_auc_table_columns_are_the_test_quality() -> None:
    """Catches auc_table keying its quality columns by the training quality instead of the test quality."""
    rows = [
        {
            "detector": "d",
            "train_methods": "all",
            "level": "frame",
            "train_quality": tq,
            "test_quality": q,
            "test_set": s,
            "auc": tq / 1000 + q / 100 + i / 10000,
        }
        for tq in (95, 80)
        for q in (95, 60)
        for i, s in enumerate(["all", *SETS])
    ]
    table = auc_table(pd.DataFrame(rows))
    assert [c for c in table.columns if c.endswith("/all")] == ["q95/all", "q60/all"]
    assert table["train_quality"].tolist() == [95, 80]
    for r, tq in enumerate((95, 80)):
        for q in (95, 60):
            for i, s in enumerate(["all", *SETS]):
                assert table.loc[r, f"q{q}/{s}"] == pytest.approx(tq / 1000 + q / 100 + i / 10000)
