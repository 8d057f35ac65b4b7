"""The image-folder test source (`evaluate.test_sources` kind images), and the layout every kind's images take:
labelled image datasets (real vs GAN / diffusion images) laid out as

    <root>/real/**/<image>              label 0, method "original"
    <root>/fake/<generator>/**/<image>  label 1, method = the generator's name made key-safe

at any depth, as .jpg/.jpeg/.png/.webp. `scan` lists them into a manifest-like table (`TABLE_COLUMNS`), one row
per usable image; a file of any other type is ignored with a log line. Skipped by name, with the reason in
`Scan.skipped` (the scan report): a file that does not decode, an image smaller than `MIN_SIDE` px on a side, and
every copy of an image whose bytes (sha256) are under both real/ and fake/ (a label error) or in two splits (a
leak between them). A dataset without real/ or fake/, or without a usable image in either, is refused.

Splits come from a stable hash of each image's name (its path inside real/ or fake/<generator>/, so a
generator's `0001.png` and the real `0001.png` of a paired dataset land together), or from a split file.
Adding files never moves another file to another split.

Images are never re-encoded before MozJPEG except to decode them: `compress_images` decodes each file and
hands the pixels straight to the jpeg stage's encoder (`dfpipe.data.compress.encode`), the same call for real and
fake. The original encoding of each file is recorded (format; for JPEG a quality estimate from its
quantisation tables) because a detector could otherwise learn "PNG vs JPEG history" instead of the forgery.

The GAN-face set and the FF++-tree crops are built in this layout, so `scan` reads every kind's images; `scan_entry`
is the kind images itself: a given folder, scanned as it is.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from dfpipe.data.compress import JPEG_COLUMNS, decode_rgb, encode, encoder_id
from dfpipe.io import write_json, write_parquet

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
REAL, FAKE = "real", "fake"
ORIGINAL = "original"
SPLITS = ("train", "val", "test")
DEFAULT_FRACTIONS = {"train": 0.7, "val": 0.15, "test": 0.15}
# The smallest side an image may have. SSIM (dfpipe.data.fidelity.measure) needs 11 px for its window, and 32 px is
# the smallest crop the pipeline makes or reads anywhere else (faces.size, ganfaces size, probes input_size):
# a smaller image holds no face worth scoring, only its upscaling.
MIN_SIDE = 32
TABLE_COLUMNS = [
    "key",
    "video_id",
    "method",
    "generator",
    "label",
    "split",
    "path",
    "encoding",
    "quality_estimate",
    "width",
    "height",
    "bytes",
]

# The IJG (libjpeg) base tables in natural order, which PIL's `.quantization` also uses.
IJG_LUMA = np.array(
    [
        16,
        11,
        10,
        16,
        24,
        40,
        51,
        61,
        12,
        12,
        14,
        19,
        26,
        58,
        60,
        55,
        14,
        13,
        16,
        24,
        40,
        57,
        69,
        56,
        14,
        17,
        22,
        29,
        51,
        87,
        80,
        62,
        18,
        22,
        37,
        56,
        68,
        109,
        103,
        77,
        24,
        35,
        55,
        64,
        81,
        104,
        113,
        92,
        49,
        64,
        78,
        87,
        103,
        121,
        120,
        101,
        72,
        92,
        95,
        98,
        112,
        100,
        103,
        99,
    ]
)
IJG_CHROMA = np.array(
    [17, 18, 24, 47, *[99] * 4, 18, 21, 26, 66, *[99] * 4, 24, 26, 56, *[99] * 5, 47, 66, *[99] * 6, *[99] * 32]
)


def ijg_tables(quality: int) -> tuple[np.ndarray, np.ndarray]:
    """The luminance and chrominance tables libjpeg writes at `quality` (baseline: entries within 1..255)."""
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return tuple(np.clip((t * scale + 50) // 100, 1, 255) for t in (IJG_LUMA, IJG_CHROMA))


_IJG = {q: ijg_tables(q) for q in range(1, 101)}


def jpeg_quality(qtables: Mapping[int, Sequence[int]]) -> float:
    """The IJG quality whose tables are closest to a file's (luminance, and chrominance when present).

    Exact for files written by libjpeg/libjpeg-turbo/PIL at a quality setting; an estimate for encoders
    with other base tables (MozJPEG, cameras, Photoshop). NaN without tables."""
    if not qtables or 0 not in qtables:
        return float("nan")
    luma = np.asarray(qtables[0], dtype=int)
    chroma = np.asarray(qtables[1], dtype=int) if 1 in qtables else None

    def distance(q: int) -> int:
        ref_l, ref_c = _IJG[q]
        return int(np.abs(luma - ref_l).sum() + (np.abs(chroma - ref_c).sum() if chroma is not None else 0))

    return float(min(range(1, 101), key=lambda q: (distance(q), -q)))


def safe_name(text: str) -> str:
    """A key-safe form: only letters, digits and _ (sample keys split at '-' and '.', paths at '/')."""
    return re.sub(r"[^A-Za-z0-9_]", "_", text)


def split_of(name: str, fractions: Mapping[str, float] = DEFAULT_FRACTIONS) -> str:
    """The split of an image name from a stable hash (sha1, not Python's salted hash): the same name gets the
    same split on every run and machine, whatever other files exist."""
    u = int.from_bytes(hashlib.sha1(name.encode("utf-8")).digest()[:8], "big") / 2**64
    edge = 0.0
    for split in SPLITS:
        edge += fractions.get(split, 0.0)
        if u < edge:
            return split
    return SPLITS[-1]


def read_split_file(path: Path) -> dict[str, str]:
    """{image name: split} from a JSON file {"train": [names], "val": [...], "test": [...]}; a name is a path
    inside real/ or fake/<generator>/ (applies to every class folder) or a path from the root."""
    try:
        obj = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exn:
        raise ValueError(
            f"{path}: not a readable split file ({exn}); expected JSON "
            '{"train": [names], "val": [...], "test": [...]}'
        ) from exn
    if (
        not isinstance(obj, dict)
        or not set(obj) <= set(SPLITS)
        or not all(isinstance(v, list) and all(isinstance(n, str) for n in v) for v in obj.values())
    ):
        raise ValueError(f"{path}: expected a JSON object with lists of names under {list(SPLITS)}")
    out: dict[str, str] = {}
    for split, names in obj.items():
        for name in names:
            if name in out and out[name] != split:
                raise ValueError(f"{path}: {name!r} is listed in both {out[name]} and {split}; keep it in one")
            out[name] = split
    return out


@dataclass
class Scan:
    """The image table and what was left out of it (paths relative to the root, with the reason)."""

    table: pd.DataFrame
    # images left out of the table: unreadable, too small, or duplicated across classes or splits
    skipped: list[tuple[str, str]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # files that are not images
    # inputs a built source made no image of (ffpp_tree: videos without a usable face), with the reason
    left_out: list[tuple[str, str]] = field(default_factory=list)


def _class_of(rel: Path) -> tuple[str, str, Path] | None:
    """(generator, label kind, path inside the class folder) of a file path relative to the root, or None."""
    parts = rel.parts
    if parts[0] == REAL and len(parts) >= 2:
        return ORIGINAL, REAL, Path(*parts[1:])
    if parts[0] == FAKE and len(parts) >= 3:
        return parts[1], FAKE, Path(*parts[2:])
    return None


def _inspect(data: bytes) -> tuple[str, float, int, int]:
    """(encoding, JPEG quality estimate, width, height) of an image file's bytes; decodes them fully, so a damaged
    file raises here."""
    with Image.open(io.BytesIO(data)) as im:
        fmt = (im.format or "?").lower()
        qtables = getattr(im, "quantization", None) if fmt == "jpeg" else None
        im.load()
        return fmt, jpeg_quality(qtables) if qtables else float("nan"), im.width, im.height


def scan(root: Path, *, split_file: Path | None = None, fractions: Mapping[str, float] = DEFAULT_FRACTIONS) -> Scan:
    """Every image under `root`/real and `root`/fake/<generator> (see the module docstring), sorted by path."""
    root = Path(root)
    missing = [folder for kind, folder in ((REAL, "real/"), (FAKE, "fake/<generator>/")) if not (root / kind).is_dir()]
    if missing:
        raise FileNotFoundError(
            f"{root}: no {' or '.join(missing)} folder; an image-folder dataset keeps "
            "real images under real/ and each generator's under fake/<generator>/"
        )
    if abs(sum(fractions.values()) - 1.0) > 1e-9 or set(fractions) - set(SPLITS):
        raise ValueError(f"split fractions {dict(fractions)}: need {list(SPLITS)} summing to 1")
    listed = read_split_file(split_file) if split_file is not None else None
    rows, skipped, ignored = [], [], []
    methods: dict[str, str] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root)
        where = _class_of(rel)
        if any(part.startswith(".") for part in rel.parts):
            continue  # hidden files and folders (.DS_Store, .git) are nobody's data
        if where is None:
            ignored.append(rel.as_posix())
            logger.info(f"images: ignored {rel.as_posix()} (outside real/ and fake/<generator>/)")
            continue
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            ignored.append(rel.as_posix())
            logger.info(f"images: ignored {rel.as_posix()} (not a {'/'.join(IMAGE_SUFFIXES)} file)")
            continue
        generator, kind, inner = where
        method = ORIGINAL if kind == REAL else safe_name(generator)
        if kind == FAKE and (method == ORIGINAL or methods.setdefault(method, generator) != generator):
            raise ValueError(
                f"{root / FAKE / generator}: generator name {generator!r} becomes method {method!r}, "
                f"which {'names the real images' if method == ORIGINAL else 'another generator folder also becomes'}; "
                "rename the folder"
            )
        data = path.read_bytes()
        try:
            encoding, quality, width, height = _inspect(data)
        except Exception as exn:  # PIL raises many types for damaged files (OSError, SyntaxError, ValueError...)
            reason = f"{type(exn).__name__}: {exn}"
            skipped.append((rel.as_posix(), reason))
            logger.warning(
                f"images: skipped {rel.as_posix()}: not a readable image ({reason}); replace or delete the file"
            )
            continue
        if min(width, height) < MIN_SIDE:
            reason = f"too small: {width}×{height} px, an image needs at least {MIN_SIDE} px a side"
            skipped.append((rel.as_posix(), reason))
            logger.warning(f"images: skipped {rel.as_posix()}: {reason}; replace or delete the file")
            continue
        name = inner.as_posix()
        if listed is not None:
            split = listed.get(rel.as_posix(), listed.get(name))
        else:
            split = split_of(name, fractions)
        rows.append(
            {
                "video_id": f"{safe_name(inner.with_suffix('').as_posix())[:80]}_{hashlib.sha1(name.encode()).hexdigest()[:8]}",
                "method": method,
                "generator": generator,
                "label": int(kind == FAKE),
                "split": split,
                "path": rel.as_posix(),
                "encoding": encoding,
                "quality_estimate": quality,
                "width": width,
                "height": height,
                "bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        )
    rows, duplicated = _without_duplicates(rows)
    skipped = sorted([*skipped, *duplicated])
    for label, name, folder in ((0, "real", "real/"), (1, "fake", "fake/<generator>/")):
        if not any(row["label"] == label for row in rows):
            left = f" ({len(skipped)} files skipped, named in the log)" if skipped else ""
            raise ValueError(
                f"{root / folder}: no usable image{left}; an image-folder dataset needs {name} images: "
                f"put them under {folder}"
            )
    table = pd.DataFrame(rows, columns=[c for c in TABLE_COLUMNS if c != "key"])
    table.insert(0, "key", table["method"] + "/" + table["video_id"])
    if listed is not None:
        unused = (table["split"].isna()).sum()
        if unused:
            logger.info(
                f"images: {unused} images are in no split of {Path(split_file).name}: kept in the table, not in the shards"
            )
    logger.info(
        f"images: {len(table)} images ({(table['label'] == 0).sum()} real, {(table['label'] == 1).sum()} fake "
        f"from {table.loc[table['label'] == 1, 'method'].nunique()} generators), {len(skipped)} skipped "
        f"(unreadable, too small or duplicated), {len(ignored)} other files ignored"
    )
    return Scan(
        table.astype({"label": "int64", "width": "int64", "height": "int64", "bytes": "int64"}), skipped, ignored
    )


def _without_duplicates(rows: list[dict]) -> tuple[list[dict], list[tuple[str, str]]]:
    """The rows (each with its file's "sha256", dropped here) less every copy of an image whose bytes are in both
    classes or in two splits, and those copies as (path, reason). Every copy goes rather than all but one: which
    copy is right is the dataset owner's call, and dropping them all does not depend on which file came first."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row.pop("sha256"), []).append(row)
    dropped: list[tuple[str, str]] = []
    for copies in groups.values():
        labels = {row["label"] for row in copies}
        splits = {row["split"] for row in copies if row["split"] is not None}
        if len(labels) == 1 and len(splits) <= 1:
            continue  # copies in one class and one split: harmless, kept
        if len(labels) > 1:
            why = "an image cannot be both real and fake; delete the copy with the wrong label"
        else:
            why = "one image in two splits would leak between them; delete the extra copy"
        for row in copies:
            others = ", ".join(f"{o['path']} ({o['split'] or 'no split'})" for o in copies if o is not row)
            reason = f"same bytes as {others}: {why}"
            dropped.append((row["path"], reason))
            logger.warning(f"images: skipped {row['path']}: {reason}")
    gone = {path for path, _ in dropped}
    return [row for row in rows if row["path"] not in gone], dropped


def write_scan(result: Scan, table_path: Path, report_path: Path | None = None) -> None:
    """The table as parquet and, optionally, a JSON report of skipped, ignored and left-out inputs (both atomic)."""
    write_parquet(table_path, result.table)
    if report_path is not None:
        write_json(
            report_path,
            {
                "images": len(result.table),
                "skipped": [{"path": p, "reason": r} for p, r in result.skipped],
                "ignored": result.ignored,
                "left_out": [{"path": p, "reason": r} for p, r in result.left_out],
            },
        )


def read_rgb(root: Path, rel: str) -> np.ndarray:
    """The decoded pixels of one image (RGB uint8; EXIF orientation ignored, as the jpeg stage does)."""
    path = Path(root) / rel
    return decode_rgb(path.read_bytes(), rel, field="file")


def compress_images(
    table: pd.DataFrame, root: Path, quality: int, flags: Sequence[str], cjpeg: Path, threads: int = 1
) -> pd.DataFrame:
    """The jpeg stage's table (`dfpipe.data.compress.JPEG_COLUMNS`, frame_index 0) for the images of `table` that
    have a split: each file decoded once and its pixels encoded by MozJPEG, the same call for every image."""
    rows = table[table["split"].notna()].reset_index(drop=True)
    encoder = encoder_id(cjpeg, quality, flags)

    def one(rel: str) -> bytes:
        return encode(read_rgb(root, rel), quality, flags, cjpeg, rel)

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        done = list(pool.map(one, rows["path"].tolist()))
    out = rows[["key", "method", "video_id", "split", "label"]].copy()
    out["frame_index"] = 0
    out["quality"] = int(quality)
    out["jpeg"] = pd.Series(done, index=out.index, dtype=object)
    out["bytes"] = out["jpeg"].map(len).astype("int64")
    out["encoder"] = encoder
    return out[JPEG_COLUMNS]


def scan_entry(
    entry: Mapping[str, Any], folder: Path, settings: Mapping[str, Any], *, where: str, threads: int = 1
) -> Scan:
    """Kind images: `folder`, the entry's `root`, scanned as it is (nothing to build)."""
    return scan(folder)
