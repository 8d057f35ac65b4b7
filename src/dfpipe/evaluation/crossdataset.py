"""Test sources and the cross-dataset matrix (issue 9): extra datasets scored by models trained on another.

A test source (config `evaluate.test_sources`) is an image-folder dataset (`dfpipe.data.sources.images`): a given
`root`, the offline GAN-face set (`dfpipe.evaluation.test_sources.ganfaces`) built under the output root, or face crops of an FF++-layout
tree's videos (`dfpipe.evaluation.test_sources.ffpp_tree`, e.g. FaceShifter, DeepFakeDetection) made there by the faces stage's code.
Its images go through the same MozJPEG encoder at every configured quality into shards of the main shards'
format (`{dest}/q<Q>/{split}-0000.tar`, `{split}.counts.json`, `index.json`), so the loader, predict and the
probes read them like the main dataset's.

The test sources' shard paths, splits and config lookup, which the rule files need, are in
`dfpipe.evaluation.crossdataset_layout`: this module imports torch, timm and scikit-learn, too slow for every workflow read.

`detector_rows` / `probe_rows` turn scores into rows of one long table (`MATRIX_COLUMNS`): train dataset ×
test dataset × test quality → AUC with its bootstrap interval (`INTERVAL`) and balanced ACC, per model, with
the samples scored (n, n_pos fake, n_neg real); `plot_matrix` draws it as a heat map. Probes fill it source ×
source: `routed_getter` lets one probe_table call, trained on any dataset (or on the union of all with a train
split, `union_getter`), score every dataset's test split, and `routed_probe_rows` names the rows.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dfpipe import assets
from dfpipe.config import schema_defaults
from dfpipe.data import shards
from dfpipe.data.sources import images
from dfpipe.evaluation import probes
from dfpipe.evaluation.crossdataset_layout import SPLITS
from dfpipe.evaluation.metrics import bootstrap_auc_ci, choose_threshold, identity_keys, video_weights
from dfpipe.evaluation.shortcuts import flags as shortcut_flags
from dfpipe.evaluation.test_sources import ffpp_tree, ganfaces
from dfpipe.io import write_json, write_parquet

logger = logging.getLogger(__name__)

KINDS = ("ganfaces", "images", "ffpp_tree")
BUILT = ("ganfaces", "ffpp_tree")  # kinds whose images are made under the source's own folder
MATRIX_COLUMNS = [
    "train_dataset",
    "test_dataset",
    "model",
    "kind",
    "train_quality",
    "test_quality",
    "n",
    "n_pos",
    "n_neg",
    "auc",
    "auc_lo",
    "auc_hi",
    "bacc",
]
SHORTCUT_COLUMNS = ["shortcut_cue", "shortcut_auc", "shortcut"]  # added by mark_shortcuts
INTERVAL = ("auc_lo", "auc_hi")  # percentile bootstrap 95% interval of the AUC (detector rows: resampling identities)


def source_root(entry: Mapping[str, Any], dest: Path) -> Path:
    """Where the images of a test source are: its `root`, or `dest/images` for a built kind."""
    if entry["kind"] in BUILT:
        return Path(dest) / "images"
    if not entry.get("root"):
        raise ValueError(
            f"evaluate.test_sources[{entry['name']}]: kind images needs `root` (a folder with real/ and fake/<generator>/)"
        )
    return Path(entry["root"]).expanduser()


def scan_source(
    entry: Mapping[str, Any],
    dest: Path,
    face_settings: Mapping[str, Any] | None = None,
    threads: int = 1,
    main_splits: Mapping[str, str] | None = None,
) -> images.Scan:
    """Build the images of a built kind, then scan the image folder (with the built set's split file).
    Kind ffpp_tree crops faces with `face_settings` (config `faces`; None: the schema's defaults). Kind ganfaces
    follows `main_splits` (identity → split of the main dataset, when it holds the set's people: see
    `ganfaces.main_identity_splits`), and `drop_seen_identities` then guarantees its test split holds none of the
    identities the main models were trained or selected on. Keys `entry` leaves out take the schema's defaults, as
    config validation fills them."""
    entry = {**schema_defaults("evaluate.test_sources"), **entry}
    where = f"evaluate.test_sources[{entry['name']}]"
    if entry["kind"] not in KINDS:
        raise ValueError(f"{where}: kind {entry['kind']!r}; allowed {list(KINDS)}")
    root = source_root(entry, dest)
    split_file, left_out = None, []
    if entry["kind"] == "ganfaces":
        split_file = ganfaces.build(root, entry.get("ganfaces") or {}, main_splits=main_splits)
    elif entry["kind"] == "ffpp_tree":
        if not entry.get("root"):
            raise ValueError(f"{where}: kind ffpp_tree needs `root` (an FF++-layout tree, e.g. downloads/ffpp)")
        split_file, left_out = ffpp_tree.build(
            Path(entry["root"]).expanduser(),
            root,
            entry.get("methods") or [],
            where=where,
            compression=entry["compression"],
            frames_per_video=int(entry["frames_per_video"]),
            face_settings=dict(face_settings or schema_defaults("faces")),
            model_path=assets.face_detector_model(),
            splits_dir=entry.get("splits_dir"),
            threads=threads,
        )
    scan = images.scan(root, split_file=split_file)
    if entry["kind"] == "ganfaces":
        scan.table = drop_seen_identities(scan.table, main_splits or {}, where)
    scan.left_out = left_out
    check_splits(scan.table, where, root if entry["kind"] == "images" else None)
    return scan


def identity_of(paths: pd.Series) -> pd.Series:
    """The identity folder of each image path of a GAN-face set (`real/<identity>/<k>.png`,
    `fake/<generator>/<identity>/<k>.png`)."""
    return paths.astype(str).str.split("/").str[-2]


def drop_seen_identities(table: pd.DataFrame, main_splits: Mapping[str, str], where: str) -> pd.DataFrame:
    """`table` without the test-split images of identities the main dataset trains or validates on (a log line
    says how many): a model must never be scored on a person it was trained or selected on."""
    seen = {i for i, split in main_splits.items() if split != "test"}
    drop = table["split"].eq("test") & identity_of(table["path"]).isin(seen)
    if drop.any():
        logger.info(
            f"{where}: {int(drop.sum())} test images of identities the main models train or validate on left out: "
            f"{sorted(set(identity_of(table.loc[drop, 'path'])))}"
        )
    return table[~drop].reset_index(drop=True)


def check_splits(table: pd.DataFrame, where: str, root: Path | None = None) -> None:
    """Refuse a test source whose test split (what every model is scored on) lacks real or fake images, or whose
    train or val split holds one class only (probes trained on the source fit on train and choose their threshold
    on val); empty train and val splits make a test-only source. `root`: the image folder of kind images, named
    in the fix."""
    for split in SPLITS:
        labels = table.loc[table["split"] == split, "label"]
        real, fake = int((labels == 0).sum()), int((labels == 1).sum())
        if (real and fake) or (split != "test" and not real + fake):
            continue
        missing = " and ".join(name for name, n in (("real", real), ("fake", fake)) if not n)
        fix = (
            f"add {missing} images under {root} (a stable hash of each file's name puts about 15% of them in test, "
            "15% in val and the rest in train)"
            if root is not None
            else f"add {missing} inputs to the source (its scan.json names what its build left out)"
        )
        raise ValueError(
            f"{where}: its {split} split holds {real} real and {fake} fake images, and scores need both classes; {fix}"
        )


def write_source_shards(
    table: pd.DataFrame, root: Path, quality: int, flags: Sequence[str], cjpeg: Path, out_dir: Path, threads: int = 1
) -> dict[str, Any]:
    """MozJPEG at `quality` of every image with a split, one shard per split in `SPLITS` plus counts and
    index.json, as the shards stage writes them, and `quality.parquet`: each image's PSNR/SSIM/bpp with its
    original encoding (`original_encoding`); returns the index."""
    jpegs = images.compress_images(table, root, quality, flags, cjpeg, threads=threads)
    counts = []
    for split in SPLITS:
        c = shards.write_split([jpegs], quality, split, 1, out_dir)
        write_json(Path(out_dir) / f"{split}.counts.json", c)
        counts.append(c)
    measured = jpegs[["key", "method", "quality", "psnr", "ssim", "bpp"]].copy()
    measured["original"] = measured["key"].map(original_encoding(table).to_dict())
    write_parquet(Path(out_dir) / "quality.parquet", measured)
    return shards.write_index(counts, Path(out_dir) / "index.json")


def original_encoding(table: pd.DataFrame) -> pd.Series:
    """Each image's encoding before MozJPEG, by key: "PNG", "WEBP", or "JPEG q<estimate>" (the estimate rounded
    to 5), so that the PSNR/SSIM report can tell JPEG-on-JPEG from first compressions."""
    estimate = pd.to_numeric(table["quality_estimate"], errors="coerce")
    encoding = table["encoding"].astype(str).str.upper()
    jpeg = encoding.eq("JPEG") & estimate.notna()
    rounded = (estimate / 5).round().mul(5).astype("Int64").astype(str)
    names = encoding.where(~jpeg, "JPEG q" + rounded)
    return pd.Series(names.to_numpy(), index=table["key"].to_numpy())


def summarize_quality(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """The PSNR/SSIM report of test sources ({name: its quality.parquet tables concatenated}): per source ×
    method × original encoding × MozJPEG quality, as `dfpipe.data.fidelity.summarize` gives it for the main set."""
    from dfpipe.data import fidelity

    named = [t.assign(dataset=name) for name, t in tables.items()]
    return fidelity.summarize(named, keys=("dataset", "method", "original"))


def has_train_split(shards_dir: Path, qualities: Sequence[int]) -> bool:
    """Whether a test source's train shards hold images at every quality (an ffpp_tree source's are empty)."""
    counts = [json.loads((Path(shards_dir) / f"q{q}" / "train.counts.json").read_text()) for q in qualities]
    return all(c["samples"] > 0 for c in counts)


def image_identities(table: pd.DataFrame) -> dict[str, str]:
    """video_id → identity of a test source's images (its scan table): the first folder inside the class folder
    (`real/<identity>/...`, `fake/<generator>/<identity>/...`: a GAN-face set's identity numbers, a folder per
    person in an image folder), else the image itself. Views of one person are not independent samples."""
    rest = table["path"].astype(str).str.split("/").map(lambda p: p[1:] if p[0] == "real" else p[2:])
    identity = [r[0] if len(r) > 1 else v for r, v in zip(rest, table["video_id"])]
    return dict(zip(table["video_id"], identity))


def source_groups(video_keys: np.ndarray, identities: Mapping[str, str] | None) -> np.ndarray:
    """The identity of each test-source sample (`image_identities` by video_id; an unknown id is its own)."""
    known = identities or {}
    ids = pd.Series(video_keys).str.rsplit("/", n=1).str[-1]
    return np.array([known.get(i, i) for i in ids], dtype=object)


def _scores_row(labels, scores, predicted, video_keys, groups, n_boot: int, seed: int) -> dict[str, Any]:
    """Counts, AUC with its interval resampling whole `groups` (identities: each brings its images of both
    classes), balanced ACC of `predicted`; frames weigh 1 / their video's count."""
    m = probes.evaluate_scores(labels, scores, predicted, video_keys, n_boot=0, seed=seed)
    if n_boot and np.isfinite(m["auc"]):
        w = video_weights(video_keys)
        m["auc_lo"], m["auc_hi"] = bootstrap_auc_ci(
            labels, scores, n=n_boot, seed=seed, groups=groups, weights=w, stratify=False
        )
    return {c: m[c] for c in ("n", "n_pos", "n_neg", "auc", *INTERVAL, "bacc")}


def detector_rows(
    predictions: pd.DataFrame,
    cross: pd.DataFrame,
    train_dataset: str,
    test_dataset: str,
    model: str,
    n_boot: int = 0,
    seed: int = 0,
    identities: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Rows of one detector: on its own test split (`predictions`, the predict rule's table) and on a test
    source (`cross`: test_quality, label, score, video_key). Balanced ACC at the threshold chosen on the
    model's own validation split (as the AUC table does); the AUC's interval from `n_boot` resamples of whole
    identities: the main split's target identities (`metrics.identity_keys`, as the main table), the test
    source's by `identities` (video_id → identity, `image_identities`; None: each image its own); 0: NaN bounds."""
    val = predictions[predictions["split"] == "val"]
    w = video_weights(val["video_key"].to_numpy())
    threshold = choose_threshold(val["label"].to_numpy(), val["score"].to_numpy(), w)
    tq = int(predictions["train_quality"].iloc[0])
    rows = []
    own = predictions[predictions["split"] == "test"]
    for dataset, table, main in ((train_dataset, own, True), (test_dataset, cross, False)):
        for q, part in table.groupby("test_quality", sort=True):
            scores = part["score"].to_numpy()
            keys = part["video_key"].to_numpy()
            groups = identity_keys(keys) if main else source_groups(keys, identities)
            rows.append(
                {
                    "train_dataset": train_dataset,
                    "test_dataset": dataset,
                    "model": model,
                    "kind": "detector",
                    "train_quality": tq,
                    "test_quality": int(q),
                    **_scores_row(
                        part["label"].to_numpy(),
                        scores,
                        scores >= threshold,
                        keys,
                        groups,
                        n_boot,
                        seed,
                    ),
                }
            )
    return rows


def probe_rows(table: pd.DataFrame, train_dataset: str, test_dataset: str) -> pd.DataFrame:
    """Matrix rows from a probe table (untransformed test images), one per probe and test quality; a probe is
    named backbone/reduction/classifier/train transform. Counts and the AUC interval are the probe table's
    (config probes.bootstrap resamples)."""
    sel = table[(table["test_transform"] == "none") & table["auc"].notna()]
    out = pd.DataFrame(
        {
            "train_dataset": train_dataset,
            "test_dataset": test_dataset,
            "model": sel["backbone"] + "/" + sel["reduction"] + "/" + sel["classifier"] + "/" + sel["train_transform"],
            "kind": "probe",
            "train_quality": sel["train_quality"].astype(int),
            "test_quality": sel["test_quality"].astype(int),
            **{c: sel[c] for c in ("n", "n_pos", "n_neg", "auc", *INTERVAL, "bacc")},
        }
    )
    return out.reindex(columns=MATRIX_COLUMNS)


def mark_shortcuts(matrix: pd.DataFrame, shortcut_table: pd.DataFrame) -> pd.DataFrame:
    """`matrix` with, per row, its test set's strongest shortcut cue at that quality (`dfpipe.evaluation.shortcuts`):
    `shortcut_cue`, `shortcut_auc` and `shortcut` (True where a cue alone reaches the flag)."""
    marks = shortcut_flags(shortcut_table).rename(columns={"dataset": "test_dataset"})
    out = matrix.drop(columns=[c for c in SHORTCUT_COLUMNS if c in matrix]).merge(
        marks, on=["test_dataset", "test_quality"], how="left"
    )
    out["shortcut"] = out["shortcut"].eq(True)
    return out


def _cell_notes(matrix: pd.DataFrame) -> pd.DataFrame:
    """Per pair × test quality: the one model's interval bounds (NaN when the cell averages several models or
    has no interval), how many models have an interval, and how many of those lie off 0.5 (all above or below)."""
    m = matrix.assign(
        has=matrix["auc_lo"].notna() & matrix["auc_hi"].notna(),
        off=(matrix["auc_lo"] > 0.5) | (matrix["auc_hi"] < 0.5),
    )
    m["shortcut"] = m["shortcut"].eq(True)
    cells = m.groupby(["pair", "test_quality"]).agg(
        shortcut=("shortcut", "any"),
        cue=("shortcut_cue", "first"),
        cue_auc=("shortcut_auc", "first"),
        models=("auc", "count"),
        lo=("auc_lo", "first"),
        hi=("auc_hi", "first"),
        bounded=("has", "sum"),
        off=("off", "sum"),
    )
    single = cells["models"] == 1
    cells[["lo", "hi"]] = cells[["lo", "hi"]].where(single, np.nan)
    return cells


def plot_matrix(matrix: pd.DataFrame, path: str | Path) -> None:
    """Heat map of mean AUC: rows train dataset → test dataset per kind of model, columns test quality. Under
    the AUC each cell gives the bootstrap 95% interval when it holds one model, else "k/m ≠ 0.5": of the m
    models with an interval, k have one that excludes 0.5. A cell where every model's interval holds 0.5 (no
    model told apart from chance) is hatched; cells without intervals (bootstrap 0) show the AUC only."""
    from matplotlib.patches import Rectangle

    from dfpipe.evaluation.tables import pyplot, save_figure

    plt = pyplot()
    m = matrix.reindex(columns=[*matrix.columns, *(c for c in (*INTERVAL, *SHORTCUT_COLUMNS) if c not in matrix)])
    m = m.assign(pair=m["kind"] + ": " + m["train_dataset"] + " → " + m["test_dataset"])
    grid = m.pivot_table(index="pair", columns="test_quality", values="auc", aggfunc="mean")
    grid = grid[sorted(grid.columns, reverse=True)]
    cells = _cell_notes(m)
    fig, ax = plt.subplots(figsize=(1.6 * grid.shape[1] + 4, 0.7 * grid.shape[0] + 1.8))
    im = ax.imshow(grid.to_numpy(), vmin=0.0, vmax=1.0, cmap="RdYlGn", aspect="auto")
    ax.set_xticks(range(grid.shape[1]), [f"q{q}" for q in grid.columns])
    ax.set_yticks(range(grid.shape[0]), grid.index)
    for (i, j), v in np.ndenumerate(grid.to_numpy()):
        if not np.isfinite(v):
            continue
        cell = cells.loc[(grid.index[i], grid.columns[j])]
        text = f"{v:.2f}"
        if np.isfinite(cell["lo"]):
            text += f"\n[{cell['lo']:.2f}, {cell['hi']:.2f}]"
        elif cell["bounded"]:
            text += f"\n{int(cell['off'])}/{int(cell['bounded'])} ≠ 0.5"
        chance = bool(cell["bounded"]) and not cell["off"]
        if chance:
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="//", edgecolor="0.35", lw=0))
        if cell["shortcut"]:  # a trivial cue separates this test set: the AUC may measure the cue
            text += f"\nshortcut: {cell['cue']} {float(cell['cue_auc']):.2f}"
            ax.add_patch(Rectangle((j - 0.48, i - 0.48), 0.96, 0.96, fill=False, edgecolor="black", lw=2.5, ls="--"))
        box = {"facecolor": "white", "alpha": 0.7, "lw": 0, "pad": 1.5} if chance else None
        ax.text(j, i, text, ha="center", va="center", fontsize=7, bbox=box)
    ax.set_xlabel("test quality")
    ax.set_title(
        "cross-dataset mean AUC (over models), bootstrap 95% CI\nhatched: every interval holds 0.5; dashed frame: "
        "a cue alone separates the test set (shortcut_table.csv)"
    )
    fig.colorbar(im, ax=ax, fraction=0.04)
    fig.tight_layout()
    save_figure(fig, path)


UNION = "union"  # train_dataset of probes fitted on every dataset with a train split together


def routed_getter(default: probes.Getter, others: Mapping[str, probes.Getter]) -> probes.Getter:
    """A getter whose quality may name a dataset, "name:Q" (served by `others[name]`); a plain quality goes to
    `default`, the training getter (its train and val splits, and its own test split when it has one). Any
    training getter (the main dataset's, a test source's, the union's) routed to every dataset lets one
    probe_table call fit once per setting and score every dataset's test split (`routed_qualities`)."""

    def get(backbone: str, quality: Any, split: str, transform: str) -> probes.FeatureSet:
        if isinstance(quality, str) and ":" in quality:
            name, q = quality.rsplit(":", 1)
            return others[name](backbone, int(q), split, transform)
        return default(backbone, quality, split, transform)

    return get


def routed_qualities(qualities: Sequence[int], datasets: Iterable[str], own: str | None = None) -> list[Any]:
    """The test qualities of a probe_table call through `routed_getter` that scores every one of `datasets`:
    plain for `own` (the training dataset, whose test split the training getter serves), "name:Q" for the
    others. `own` None (the union, which has no test split of its own): every dataset named."""
    plain = list(qualities) if own is not None else []
    return [*plain, *(f"{name}:{q}" for name in datasets if name != own for q in qualities)]


def union_getter(getters: Mapping[str, probes.Getter]) -> probes.Getter:
    """A training getter over the union of datasets: the train (and val) features of every getter pooled
    (`probes.pool`, from each dataset's own feature cache: no backbone pass of its own). A dataset without a val
    split leaves the threshold to the others. It has no test split: route it to each dataset's
    (`routed_getter`, `routed_qualities` with own None)."""

    def get(backbone: str, quality: Any, split: str, transform: str) -> probes.FeatureSet:
        if split == "test":
            raise ValueError(f"{UNION}: no test split of its own; score it on each dataset's through routed_getter")
        parts = {}
        for name, one in getters.items():
            try:
                parts[name] = one(backbone, quality, split, transform)
            except FileNotFoundError:
                if split == "train":
                    raise
        if not parts:
            raise FileNotFoundError(f"{UNION}: none of {list(getters)} has a {split} split at q{quality}")
        return probes.pool(parts)

    return get


def split_routed(table: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """A probe table scored through `routed_getter` → (rows of the training dataset's own test split, {dataset
    name: its rows}), test qualities back to integers."""
    routed = table["test_quality"].astype(str).str.contains(":")
    own = table[~routed].copy()
    own["test_quality"] = own["test_quality"].astype(int)
    names = table.loc[routed, "test_quality"].astype(str).str.rsplit(":", n=1).str[0]
    out = {}
    for name in names.unique():
        part = table[routed & (table["test_quality"].astype(str).str.rsplit(":", n=1).str[0] == name)].copy()
        part["test_quality"] = part["test_quality"].astype(str).str.rsplit(":", n=1).str[1].astype(int)
        out[name] = part
    return own, out


def routed_probe_rows(table: pd.DataFrame, train_dataset: str) -> pd.DataFrame:
    """Matrix rows of a probe table scored through `routed_getter`: the plain test qualities as `train_dataset`'s
    own test split, each "name:Q" as dataset name's."""
    own, routed = split_routed(table)
    parts = [(train_dataset, own), *routed.items()] if len(own) else list(routed.items())
    rows = [r for r in (probe_rows(part, train_dataset, name) for name, part in parts) if len(r)]
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=MATRIX_COLUMNS)
