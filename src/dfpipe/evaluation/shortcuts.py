"""Shortcut baselines: how far cues that need no learning separate a test set's real and fake images.

A detector's AUC on a test set means little if the set can be told apart by sharpness or file size alone: a
model may have learnt that cue, or the set may reward any model that happens to track it. For every test set
(the main test split and each test source) at every quality, each cue below is used as a score on its own and
its AUC is given with a bootstrap interval, exactly as a detector's would be (frames of a video weigh 1 / their
count; whole identities are resampled):

- `laplacian_var`: variance of the Laplacian of the grey crop (sharpness);
- `hf_share`: share of the crop's spectral energy above half the Nyquist frequency (fine detail, noise);
- `bpp`: bits per pixel of the JPEG the detectors read (MozJPEG spends bits on detail);
- `prior_quality`: quality the image was JPEG-encoded at before MozJPEG (quantisation tables; lossless = 101),
  where the set's inputs are image files;
- `native_size` and `aspect`: the size (square root of the pixel count) and aspect of the image, or of the face
  box in its video frame, before the crop was resized.

A cue's direction is not known in advance, so an AUC far below 0.5 is as telling as one far above it: a set is
flagged where any cue reaches `FLAG` or more, or `1 - FLAG` or less.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from dfpipe.evaluation.metrics import bootstrap_auc_ci, identity_keys, video_weights, weighted_aucs

CUES = ("laplacian_var", "hf_share", "bpp", "prior_quality", "native_size", "aspect")
FLAG = 0.8
LOSSLESS_QUALITY = 101.0  # a lossless prior encoding ranks above every JPEG quality
COLUMNS = ["dataset", "test_quality", "cue", "n", "n_pos", "n_neg", "auc", "auc_lo", "auc_hi", "flagged"]


def image_cues(jpeg: bytes) -> dict[str, float]:
    """The cues measured on one JPEG as the detectors decode it: sharpness, high-frequency share, bits per pixel."""
    grey = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_GRAYSCALE)
    if grey is None:
        raise ValueError("not a decodable JPEG")
    g = grey.astype(np.float64)
    lap = cv2.Laplacian(g, cv2.CV_64F)
    h, w = g.shape
    # a Hann window keeps the image border's jump out of the spectrum
    window = np.outer(np.hanning(h), np.hanning(w))
    power = np.abs(np.fft.fft2((g - g.mean()) * window)) ** 2
    radius = np.hypot(*np.meshgrid(np.fft.fftfreq(h), np.fft.fftfreq(w), indexing="ij"))
    total = power[radius > 0].sum()
    return {
        "laplacian_var": float(lap.var()),
        "hf_share": float(power[radius > 0.25].sum() / total) if total > 0 else 0.0,
        "bpp": 8.0 * len(jpeg) / (h * w),
    }


def shard_samples(tars: Iterable[str | Path]) -> pd.DataFrame:
    """One row per sample of WebDataset shards: its metadata (key, label, method, video_id, video_key, frame_index,
    quality) and its image cues."""
    rows = []
    for path in tars:
        with tarfile.open(path) as tar:
            members: dict[str, dict[str, bytes]] = {}
            for m in tar.getmembers():
                if m.isfile():
                    key, ext = m.name.split(".", 1)
                    members.setdefault(key, {})[ext] = tar.extractfile(m).read()
        for key, parts in members.items():
            if "jpg" not in parts or "json" not in parts:
                raise ValueError(f"{path}: sample {key} lacks its image or its metadata")
            meta = json.loads(parts["json"])
            try:
                cues = image_cues(parts["jpg"])
            except ValueError as err:
                raise ValueError(f"{path}: sample {key}: {err}") from None
            rows.append(
                {
                    "key": key,
                    **{k: meta[k] for k in ("label", "method", "video_id", "video_key", "quality")},
                    "frame_index": int(meta.get("frame_index", 0)),
                    **cues,
                }
            )
    return pd.DataFrame(rows)


def source_image_cues(images: pd.DataFrame) -> pd.DataFrame:
    """Per test-source image (a scan table: video_id, width, height, encoding, quality_estimate): its native size,
    aspect and prior JPEG quality, keyed by video_id (one image is one "video" there)."""
    lossless = images["encoding"].astype(str).str.upper().isin(["PNG", "BMP", "TIFF", "PPM"])
    prior = pd.to_numeric(images["quality_estimate"], errors="coerce").where(~lossless, LOSSLESS_QUALITY)
    return pd.DataFrame(
        {
            "video_id": images["video_id"].to_numpy(),
            "native_size": np.sqrt(images["width"].to_numpy(float) * images["height"].to_numpy(float)),
            "aspect": images["width"].to_numpy(float) / images["height"].to_numpy(float),
            "prior_quality": prior.to_numpy(float),
        }
    )


def face_box_cues(faces: pd.DataFrame) -> pd.DataFrame:
    """Per video frame of the faces stage (method, video_id, frame_index, box = x, y, w, h): the face box's size and
    aspect in the frame, before the crop was resized."""
    box = np.stack(faces["box"].to_numpy()).astype(float)
    return pd.DataFrame(
        {
            "method": faces["method"].to_numpy(),
            "video_id": faces["video_id"].to_numpy(),
            "frame_index": faces["frame_index"].to_numpy(int),
            "native_size": np.sqrt(box[:, 2] * box[:, 3]),
            "aspect": box[:, 2] / box[:, 3],
        }
    )


def cue_rows(samples: pd.DataFrame, dataset: str, n_boot: int = 200, seed: int = 0) -> list[dict[str, Any]]:
    """AUC of every cue the samples carry (a cue with a missing value or one value for all is skipped), per
    quality, with its bootstrap interval over identities (a `group` column, else `metrics.identity_keys` of the
    video keys) and the flag."""
    rows = []
    for q, part in samples.groupby("quality", sort=True):
        labels = part["label"].to_numpy(int)
        keys = part["video_key"].to_numpy()
        w = video_weights(keys)
        groups = part["group"].to_numpy() if "group" in part else identity_keys(keys)
        for cue in CUES:
            if cue not in part or part[cue].isna().any() or part[cue].nunique() < 2 or len(set(labels)) < 2:
                continue
            scores = part[cue].to_numpy(float)
            auc = float(weighted_aucs(labels, scores, w[None])[0])
            lo, hi = bootstrap_auc_ci(labels, scores, n=n_boot, seed=seed, groups=groups, weights=w, stratify=False)
            rows.append(
                {
                    "dataset": dataset,
                    "test_quality": int(q),
                    "cue": cue,
                    "n": int(labels.size),
                    "n_pos": int(labels.sum()),
                    "n_neg": int((labels == 0).sum()),
                    "auc": auc,
                    "auc_lo": lo,
                    "auc_hi": hi,
                    "flagged": bool(auc >= FLAG or auc <= 1 - FLAG),
                }
            )
    return rows


def flags(table: pd.DataFrame) -> pd.DataFrame:
    """Per dataset × test quality: the cue farthest from 0.5 (`shortcut_cue`, `shortcut_auc`) and whether any
    cue is flagged (`shortcut`)."""
    if table.empty:
        return pd.DataFrame(columns=["dataset", "test_quality", "shortcut_cue", "shortcut_auc", "shortcut"])
    t = table.assign(strength=(table["auc"] - 0.5).abs())
    top = t.sort_values(["dataset", "test_quality", "strength", "cue"], ascending=[True, True, False, True])
    top = top.groupby(["dataset", "test_quality"], as_index=False).first()
    return pd.DataFrame(
        {
            "dataset": top["dataset"],
            "test_quality": top["test_quality"].astype(int),
            "shortcut_cue": top["cue"],
            "shortcut_auc": top["auc"],
            "shortcut": top["strength"] >= FLAG - 0.5,
        }
    )


def to_markdown(table: pd.DataFrame) -> str:
    """The table as a reader wants it: a row per dataset and quality, a column per cue (AUC [interval]), flagged
    cells in bold."""
    lines = [
        "# Shortcut baselines",
        "",
        f"AUC of each cue used alone as the score (95% bootstrap interval over identities); **bold**: AUC ≥ {FLAG} or "
        f"≤ {1 - FLAG:.1f}, a set a trivial cue separates. A cue is left blank where the set does not carry it.",
        "",
    ]
    cues = [c for c in CUES if c in set(table["cue"])]
    lines += ["| dataset | quality | " + " | ".join(cues) + " |", "|---|---|" + "---|" * len(cues)]
    for (dataset, q), part in table.groupby(["dataset", "test_quality"], sort=True):
        by_cue = part.set_index("cue")
        cells = []
        for cue in cues:
            if cue not in by_cue.index:
                cells.append("")
                continue
            r = by_cue.loc[cue]
            text = f"{r['auc']:.2f} [{r['auc_lo']:.2f}, {r['auc_hi']:.2f}]"
            cells.append(f"**{text}**" if r["flagged"] else text)
        lines.append(f"| {dataset} | q{q} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def shortcut_table(sets: Mapping[str, pd.DataFrame], n_boot: int = 200, seed: int = 0) -> pd.DataFrame:
    """The table of every set ({dataset name: its samples with cues}), in `COLUMNS` order."""
    rows = [r for name, samples in sets.items() for r in cue_rows(samples, name, n_boot, seed)]
    return pd.DataFrame(rows, columns=COLUMNS)


def with_sources(samples: pd.DataFrame, extra: pd.DataFrame, on: Sequence[str]) -> pd.DataFrame:
    """`samples` with the per-image cues of `extra` joined on `on` (left join: every sample is kept)."""
    return samples.merge(extra.drop_duplicates(list(on)), on=list(on), how="left", validate="many_to_one")
