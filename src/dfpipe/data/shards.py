"""The shards stage: pack the JPEG crops of one quality and split into a fixed number of WebDataset tars, or
the test crops of one test setting (`dfpipe.axes`: another codec, the platform path, a perturbation).

Videos (not frames) are assigned to shards by a stable hash of their key, so every frame of a video lands in
one shard, the shard set is known before the data (a fixed Snakemake DAG) and reruns give the same shards.
Tars are byte-for-byte reproducible: members are sorted per table and carry fixed owner, mode and mtime.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import tarfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from dfpipe.axes import Setting
from dfpipe.io import atomic_path, write_json

NEEDED = ["key", "method", "video_id", "split", "label", "frame_index", "quality", "jpeg"]
# A test setting's table (dfpipe.data.setting_crops) holds its image in `image`, its name in `setting`.
SETTING_NEEDED = ["key", "method", "video_id", "split", "label", "frame_index", "setting", "image"]


def shard_of(video_key: str, n: int) -> int:
    """Shard index in [0, n) of a video; stable across runs and machines (Python's hash() is salted)."""
    if n < 1:
        raise ValueError(f"number of shards must be >= 1, got {n}")
    digest = hashlib.sha1(video_key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % n


def shard_name(split: str, i: int) -> str:
    return f"{split}-{i:04d}.tar"


def sample_key(method: str, video_id: str, frame_index: int) -> str:
    """WebDataset sample key; it may hold no dot (webdataset splits key and extension at the first dot)."""
    key = f"{method}-{video_id}-{int(frame_index):05d}"
    if "." in key or "/" in key:
        raise ValueError(f"sample key {key!r} contains '.' or '/'; method and video ids must not")
    return key


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o444
    info.mtime = 0  # reproducible bytes: nothing depends on when or by whom the tar was written
    tar.addfile(info, io.BytesIO(data))


def _load(table: Path | pd.DataFrame, columns: list[str]) -> tuple[str, pd.DataFrame]:
    if isinstance(table, pd.DataFrame):
        return "jpeg table", table
    return str(table), pd.read_parquet(table, columns=columns)


def _empty_counts() -> dict[str, Any]:
    return {"samples": 0, "videos": 0, "by_method": Counter(), "by_label": Counter()}


def write_split(
    jpeg_tables: Sequence[Path | pd.DataFrame], quality: int | Setting, split: str, n_shards: int, out_dir: Path
) -> dict[str, Any]:
    """Write `{out_dir}/{split}-{i:04d}.tar` for i < n_shards from the rows of `split`; return their counts.
    `quality`: the MozJPEG quality of the tables, or the test `Setting` of setting tables, whose samples
    carry their image under the setting's extension and `"setting"` in their json (`"quality"` null).

    Tables are read one at a time (one batch of JPEGs in memory); all shards stay open and each becomes
    visible only when every table has been written, so a failed run leaves no finished-looking tar.
    """
    if n_shards < 1:
        raise ValueError(f"{split}: number of shards must be >= 1, got {n_shards}")
    out_dir = Path(out_dir)
    per_shard = [_empty_counts() for _ in range(n_shards)]
    done_videos: set[str] = set()
    with contextlib.ExitStack() as stack:
        tmps = [stack.enter_context(atomic_path(out_dir / shard_name(split, i))) for i in range(n_shards)]
        # Entered after their temp paths, so the stack closes each tar (end-of-archive blocks) before renaming it.
        tars = [stack.enter_context(tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT)) for tmp in tmps]
        setting = quality if isinstance(quality, Setting) else None
        needed = SETTING_NEEDED if setting else NEEDED
        folder, image, extension = (setting.name, "image", setting.extension) if setting else (f"q{quality}", "jpeg", "jpg")
        for table in jpeg_tables:
            source, df = _load(table, needed)
            missing = [c for c in needed if c not in df.columns]
            if missing:
                raise ValueError(f"{source}: lacks columns {missing}")
            df = df[df["split"] == split]
            found = set(df["setting"]) if setting else set(df["quality"].astype(int))
            wrong = sorted(found - ({setting.name} if setting else {int(quality)}))
            if wrong:
                raise ValueError(f"{source}: holds {'setting' if setting else 'quality'} {wrong}, expected only {folder}")
            df = df.sort_values(["key", "frame_index"], kind="stable")
            for video, rows in df.groupby("key", sort=False):
                if video in done_videos:
                    raise ValueError(f"{source}: video {video} also appears in an earlier table")
                done_videos.add(video)
                i = shard_of(str(video), n_shards)
                for rec in rows.itertuples(index=False):
                    key = sample_key(rec.method, rec.video_id, rec.frame_index)
                    meta = {
                        "label": int(rec.label),
                        "method": rec.method,
                        "video_key": f"{rec.method}/{folder}/{rec.video_id}",
                        "video_id": rec.video_id,
                        "frame_index": int(rec.frame_index),
                        "quality": None if setting else int(quality),
                        "split": split,
                    }
                    if setting:
                        meta["setting"] = setting.name
                    _add(tars[i], f"{key}.{extension}", getattr(rec, image))
                    _add(tars[i], f"{key}.cls", str(int(rec.label)).encode())
                    _add(tars[i], f"{key}.json", json.dumps(meta, sort_keys=True).encode())
                    per_shard[i]["by_method"][rec.method] += 1
                    per_shard[i]["by_label"][str(int(rec.label))] += 1
                per_shard[i]["samples"] += len(rows)
                per_shard[i]["videos"] += 1
    shards = {shard_name(split, i): _plain(c) for i, c in enumerate(per_shard)}
    named = {"setting": setting.name} if setting else {}
    return {"split": split, "quality": None if setting else int(quality), **named, "shards": shards, **_total(shards.values())}


def _plain(c: dict[str, Any]) -> dict[str, Any]:
    return {
        "samples": c["samples"],
        "videos": c["videos"],
        "by_method": dict(sorted(c["by_method"].items())),
        "by_label": dict(sorted(c["by_label"].items())),
    }


def _total(parts: Any) -> dict[str, Any]:
    total = _empty_counts()
    for c in parts:
        total["samples"] += c["samples"]
        total["videos"] += c["videos"]
        total["by_method"].update(c["by_method"])
        total["by_label"].update(c["by_label"])
    return _plain(total)


def write_index(counts: Sequence[dict[str, Any]], path: str | Path) -> dict[str, Any]:
    """Write the index json of one quality's shards (counts per split, shard, method and label) and return it."""
    qualities = {c["quality"] for c in counts}
    if len(qualities) > 1:
        raise ValueError(f"{path}: counts mix qualities {sorted(qualities)}; one index per quality")
    splits = {c["split"]: {k: v for k, v in c.items() if k not in ("split", "quality")} for c in counts}
    if len(splits) != len(counts):
        raise ValueError(f"{path}: a split appears twice in the counts")
    index = {
        "quality": qualities.pop() if qualities else None,
        "splits": dict(sorted(splits.items())),
        **_total(splits.values()),
    }
    write_json(path, index)
    return index
