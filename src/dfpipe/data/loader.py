"""Shard loader: WebDataset shards of one or more qualities → uint8 image batches for training or evaluation.

The shards are indexed once (one pass over the tar headers: sample key, label, byte offsets of its jpg and
json), then each epoch is a list of sample numbers and the rest is small webdataset stages: this rank's and
worker's samples → read jpg + json at their offsets → check against the shard asked for → decode JPEG →
resize → augment → batch. Batches stay uint8 (N×3×H×W, channels_last): a quarter of the bytes of float to
pass between processes and to copy to the GPU; `normalize` makes them float on the device that trains.

Why an index rather than streaming the tars through a shuffle buffer: balanced batches oversample the
minority label (real faces are 1 in 5 in FF++), which a stream can only do by re-reading every tar once per
cycle, in every worker; with offsets each worker reads exactly the bytes of the samples it decodes, the
shuffle is an exact seeded permutation instead of a buffer's local one, and resuming is arithmetic.

Determinism and resume. Every random choice is seeded from (seed, epoch, ...): the permutation of each label
from (seed, epoch, label, cycle), the augmentations of a sample from (seed, epoch, its place in the epoch).
The epoch's order is therefore the same whatever the number of workers or ranks, and a loader resumed at
`position` (batches this rank already consumed this epoch) yields exactly the remaining batches, touching
none of the skipped ones. Batches go round-robin to ranks, then to workers (the order DataLoader collects).

Balanced training batches: real (label 0) and fake (label 1) samples alternate, so every batch holds both
labels (half each) when both exist. The minority label is oversampled: when its permutation runs out a new
one starts; an epoch ends when every sample of the majority label has been seen once, after
2 × max(n_real, n_fake) samples (short last batch dropped). With one label only, batches hold that label.

Evaluation: shard order and sample order as written, no augmentation, every sample exactly once (last batch
may be short), and the metadata of each sample (video_key, method, video_id, frame_index, label).

ELA (a detector's `ela` setting) is computed on the crop at its shard resolution, then resized: decode → ELA →
resize in evaluation, as predict does (`inference.prepare`). In training with augmentation the augmentations
act on the photo first, at shard resolution, since blur, colour jitter and JPEG re-compression are meant to
change the picture, not its error map: decode → augment (JPEG, flip, rotation, blur, jitter) → ELA → resize.
Without augmentation both orders are the same. Pixel-sized settings (blur sigma) therefore act at shard
resolution for an ELA detector and at input resolution for the others.
"""

from __future__ import annotations

import functools
import io
import json
import random
import re
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import numpy as np
import torch
import webdataset as wds
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from torchvision.transforms import v2

from dfpipe.axes import image_extension
from dfpipe.data import codecs
from dfpipe.data.augment import Augment
from dfpipe.models.ela import ELA, error_level

META_FIELDS = ("label", "method", "video_key", "video_id", "frame_index", "quality", "split")
# A shard's folder is its MozJPEG quality (q95) or its test setting's name (webp-q75, blur-s2: dfpipe.axes).
SHARD_NAME = re.compile(r"(?:^|/)(?P<folder>[^/]+)/(?P<split>[A-Za-z]+)-\d{4}\.tar$")
MOZJPEG_FOLDER = re.compile(r"^q(?P<quality>\d+)$")


NO_AUGMENT = Augment(hflip=0.0)


def expected_shard(path: Path) -> tuple[int | str, str]:
    """(quality, split) a shard holds, from its path `.../q{Q}/{split}-NNNN.tar`: the MozJPEG quality as an
    int, or a test setting's name (`.../{setting}/{split}-NNNN.tar`)."""
    m = SHARD_NAME.search(Path(path).as_posix())
    if not m:
        raise ValueError(f"{path}: not a shard path; expected .../q<quality>/<split>-NNNN.tar or .../<setting>/…")
    q = MOZJPEG_FOLDER.match(m["folder"])
    return (int(q["quality"]) if q else m["folder"]), m["split"]


def folder_name(quality: int | str) -> str:
    """The shard folder of a MozJPEG quality (q95) or a test setting (its name)."""
    return quality if isinstance(quality, str) else f"q{quality}"


class Entry(NamedTuple):
    """Where one sample lies: shard number, key, label (from .cls) and (offset, size) of its image and json."""

    shard: int
    key: str
    label: int
    image: tuple[int, int]
    json: tuple[int, int]


def rebuild_hint(shard: Path | str) -> str:
    """How to get a sound shard back: the shards rule rewrites every shard of its split."""
    m = SHARD_NAME.search(Path(shard).as_posix())
    split = m["split"] if m else "<split>"
    return f"delete it and rerun snakemake (or `snakemake --forcerun shards_{split}`) to rebuild it"


def shard_error(shard: Path | str, problem: str) -> ValueError:
    return ValueError(f"{shard}: {problem}; {rebuild_hint(shard)}")


def expected_counts(shard: Path) -> int | None:
    """Samples the shards stage wrote into `shard`, from `{split}.counts.json` beside it (None without one)."""
    _, split = expected_shard(shard)
    path = shard.parent / f"{split}.counts.json"
    if not path.is_file():
        return None
    try:
        return int(json.loads(path.read_text())["shards"][shard.name]["samples"])
    except (ValueError, KeyError, TypeError) as exn:
        raise ValueError(
            f"{path}: no sample count for {shard.name} ({type(exn).__name__}: {exn}); {rebuild_hint(shard)}"
        ) from exn


BLOCK = 512
ZERO_BLOCK = bytes(BLOCK)


def _octal(field: bytes) -> int:
    """A tar header number: NUL/space-terminated octal, or base-256 when the first byte has its top bit set."""
    if field[0] & 0x80:
        return int.from_bytes(field[1:], "big")
    digits = field.split(b"\0", 1)[0].strip()
    return int(digits, 8) if digits else 0


def _pax(records: bytes) -> dict[str, str]:
    """The `length key=value\n` records of a pax extended header."""
    out, i = {}, 0
    while i < len(records) and records[i] != 0:
        space = records.index(b" ", i)
        length = int(records[i:space])
        key, _, value = records[space + 1 : i + length - 1].partition(b"=")
        out[key.decode()] = value.decode("utf-8", "surrogateescape")
        i += length
    return out


def _scan_tar(shard: Path) -> Iterator[tuple[str, bytes, int, int, BinaryIO]]:
    """(name, type flag, data offset, size, open file) of every member, read straight from the headers.

    A few µs per member where `tarfile` spends tens (its header objects), which is most of a job's start-up
    on a full dataset's shards. Checks every header's checksum and stops at the end-of-archive block; a file
    that ends before one is cut (possibly right at a sample boundary)."""
    size = shard.stat().st_size
    offset, pending = 0, {}  # pax / GNU long-name overrides for the next member
    with open(shard, "rb") as f:
        while True:
            f.seek(offset)
            head = f.read(BLOCK)
            if head == ZERO_BLOCK:
                return
            if len(head) < BLOCK:
                raise shard_error(
                    shard,
                    f"truncated: no end-of-archive block (the file ends at byte {size}, in "
                    f"or after the member headed at byte {offset})",
                )
            try:
                checksum = _octal(head[148:156])
                kind, length = head[156:157], _octal(head[124:136])
            except ValueError as exn:
                raise shard_error(shard, f"not a tar archive: unreadable header at byte {offset}") from exn
            if checksum != sum(head[:148]) + 8 * 32 + sum(head[156:]):
                raise shard_error(shard, f"not a tar archive or damaged: bad header checksum at byte {offset}")
            data = offset + BLOCK
            name = head[:100].split(b"\0", 1)[0]
            if head[257:262] == b"ustar" and head[345] != 0:
                name = head[345:500].split(b"\0", 1)[0] + b"/" + name
            if data + length > size:
                raise shard_error(
                    shard,
                    f"truncated: member {name.decode(errors='replace')} ends at byte "
                    f"{data + length}, the file at {size}",
                )
            if kind in (b"x", b"L"):
                f.seek(data)
                payload = f.read(length)
                if kind == b"x":
                    pending.update(_pax(payload))
                else:
                    pending["path"] = payload.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            elif kind != b"g":  # a global pax header sets nothing this index needs
                member = pending.pop("path", None) or name.decode("utf-8", "surrogateescape")
                length = int(pending.pop("size", length))
                pending.clear()
                yield member, kind, data, length, f
            offset = data + -(-length // BLOCK) * BLOCK


def _index_tar(shard: Path) -> tuple[dict[str, dict[str, tuple[int, int]]], dict[str, int]]:
    """(member places per sample key and extension, labels) of one tar, refusing anything but whole sample
    files: names with a folder part (`../x`), links and folders, members running past the end of the file, and
    a file that ends without the end-of-archive block (cut, possibly right at a sample boundary)."""
    members: dict[str, dict[str, tuple[int, int]]] = {}
    labels: dict[str, int] = {}
    for name, kind, data, length, f in _scan_tar(shard):
        if "/" in name or "\\" in name or name.startswith("."):
            raise shard_error(shard, f"member {name!r} is a path, not a sample file (path traversal)")
        if kind not in (b"0", b"\0"):
            raise shard_error(shard, f"member {name!r} is not a regular file")
        key, _, ext = name.partition(".")  # webdataset's rule: the key ends at the first dot
        members.setdefault(key, {})[ext] = (data, length)
        if ext == "cls":
            f.seek(data)
            raw = f.read(length)
            if raw.strip() not in (b"0", b"1"):
                raise shard_error(shard, f"sample {key} has label {raw[:20]!r}; expected 0 (real) or 1 (fake)")
            labels[key] = int(raw)
    return members, labels


def index_shards(shards: Sequence[Path], quality: int | str | None = None, split: str | None = None) -> list[Entry]:
    """Every sample of `shards`, in shard and tar order; raises naming the files when some are missing,
    unreadable, truncated (also at a sample boundary: the end-of-archive block and the sample count of
    `{split}.counts.json` are checked), hold other members than sample files, are of another quality or split
    than asked (`quality`/`split` when given), or all empty, and naming the sample when one lacks its image
    (the .jpg of a MozJPEG quality, or its setting's own: `axes.image_extension`), .cls or .json member."""
    shards = [Path(s) for s in shards]
    if not shards:
        raise ValueError("no shards given")
    missing = [str(s) for s in shards if not s.is_file()]
    if missing:
        raise FileNotFoundError(f"missing shards: {', '.join(missing)}")
    entries: list[Entry] = []
    for n, shard in enumerate(shards):
        q, sp = expected_shard(shard)
        if (quality is not None and q != quality) or (split is not None and sp != split):
            raise ValueError(f"{shard}: a {folder_name(q)} {sp} shard, but {folder_name(quality)} {split} was asked for")
        members, labels = _index_tar(shard)
        expected = expected_counts(shard)
        if expected is not None and expected != len(members):
            raise shard_error(
                shard,
                f"holds {len(members)} samples, but the shards stage wrote {expected} "
                f"({sp}.counts.json): truncated or replaced",
            )
        image = image_extension(folder_name(q))
        for key, parts in members.items():
            lacking = [ext for ext in (image, "cls", "json") if ext not in parts]
            if lacking:
                raise shard_error(shard, f"sample {key} lacks {lacking}")
            entries.append(Entry(n, key, labels[key], parts[image], parts["json"]))
    if not entries:
        raise ValueError(f"no samples in any of the shards: {', '.join(map(str, shards))}")
    return entries


def check_sample(sample: dict[str, Any]) -> dict[str, Any]:
    """Parse the sample's json into `meta` and check it against its shard: fields present, quality and split."""
    url, key = sample["__url__"], sample["__key__"]
    try:
        meta = json.loads(sample["json"])
    except ValueError as exn:
        raise shard_error(url, f"sample {key} json is unreadable ({exn})") from exn
    lacking = [f for f in META_FIELDS if f not in meta]
    if lacking:
        raise shard_error(url, f"sample {key} json lacks {lacking}")
    quality, split = _expected_shard(url)
    held = meta.get("setting") if meta["quality"] is None else int(meta["quality"])
    if held != quality or meta["split"] != split:
        raise shard_error(
            url,
            f"sample {key} is {folder_name(held)} {meta['split']}, but its shard was asked for as "
            f"{folder_name(quality)} {split}",
        )
    if int(sample["cls"]) != int(meta["label"]):
        raise shard_error(url, f"sample {key} has cls {sample['cls']} but json label {meta['label']}")
    sample["meta"] = meta
    return sample


def decode_image(jpeg: bytes) -> Image.Image:
    """RGB PIL image of JPEG bytes (the decoder the loader and its benchmark baseline share), or of a test
    setting's WebP, AVIF, PNG or JPEG XL (which Pillow cannot read: `codecs.decode`)."""
    if codecs.pillow_cannot_read(jpeg):
        return Image.fromarray(codecs.decode(jpeg))
    image = Image.open(io.BytesIO(jpeg))
    image.load()  # decode now, so a broken JPEG fails here and not in a later stage
    return image if image.mode == "RGB" else image.convert("RGB")  # convert() copies even RGB to RGB


@functools.lru_cache(maxsize=4096)
def _expected_shard(url: str) -> tuple[int | str, str]:
    return expected_shard(Path(url))


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 batch → float32 (x / 255 - mean) / std per channel, on the batch's device, keeping its memory format."""
    if len(set(mean)) == 1 and len(set(std)) == 1:  # one mean/std for all channels (0.5 in most detectors): scalar ops
        return images.float().mul_(1 / (255 * std[0])).sub_(mean[0] / std[0])
    m = torch.tensor(mean, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    return images.float().sub_(m * 255).div_(s * 255)


def subsample_frames(entries: list[Entry], frames_per_method: dict[str, int]) -> list[Entry]:
    """Keep at most n frames of each video of a method ({method: n}): of its k frames in frame order, those at
    positions i·k//n (every 2nd when n = k/2), so a model trains as if fewer frames had been extracted
    (the augmented-frame-rate ablation) without a second faces pass. Other methods are kept whole."""
    videos: dict[str, list[tuple[int, int]]] = {}
    for i, e in enumerate(entries):
        method = e.key.split("-", 1)[0]
        if method in frames_per_method:
            video, _, frame = e.key.rpartition("-")  # keys are {method}-{video_id}-{frame:05d}
            videos.setdefault(video, []).append((int(frame), i))
    drop = set()
    for video, frames in videos.items():
        n, k = int(frames_per_method[video.split("-", 1)[0]]), len(frames)
        if n < 1:
            raise ValueError(f"frames_per_method: {video.split('-', 1)[0]}: {n} frames per video; give at least 1")
        keep = {i * k // n for i in range(min(n, k))}
        drop.update(idx for pos, (_, idx) in enumerate(sorted(frames)) if pos not in keep)
    return [e for i, e in enumerate(entries) if i not in drop]


class ShardStream(IterableDataset):
    """Batches from shards; iterate with `make_loader` (workers) and call `set_epoch` before each epoch.

    Training yields (images uint8 N×3×H×W, labels float32 N); evaluation yields (images, labels, meta) with
    meta a dict of lists. Images are RGB 0–255; `normalize` them on the device that uses them. `len()` is the
    number of batches this rank gets per epoch, counting from batch 0.
    """

    def __init__(
        self,
        shards: Sequence[Path],
        *,
        batch_size: int,
        input_size: int | tuple[int, int],
        train: bool,
        seed: int = 0,
        augment: Augment | None = None,
        max_batches: int | None = None,
        methods: Sequence[str] | None = None,
        frames_per_method: dict[str, int] | None = None,
        ela: ELA | None = None,
        samples: Collection[str] | None = None,
        quality: int | None = None,
        split: str | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.shards = [str(s) for s in shards]
        self.entries = index_shards([Path(s) for s in self.shards], quality, split)
        self.methods = None if methods is None else set(methods)
        if self.methods is not None:
            # sample keys start with "{method}-" (dfpipe.data.shards.sample_key); check_sample confirms with the json
            self.entries = [e for e in self.entries if e.key.split("-", 1)[0] in self.methods]
            if not self.entries:
                raise ValueError(f"no samples of methods {sorted(self.methods)} in: {', '.join(self.shards)}")
        if frames_per_method:
            self.entries = subsample_frames(self.entries, frames_per_method)
        if samples is not None:  # a few named samples (dfpipe.data.shards.sample_key), e.g. Grad-CAM's picks
            self.entries = [e for e in self.entries if e.key in samples]
        labels = np.array([e.label for e in self.entries])
        self.by_label = {c: np.flatnonzero(labels == c) for c in (0, 1) if (labels == c).any()}
        self.counts = {c: len(ix) for c, ix in self.by_label.items()}
        self.batch_size, self.train, self.seed = batch_size, train, seed
        self.ela = ela
        self.size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
        self.augment = (augment or Augment()) if train else NO_AUGMENT
        self._transform = self.augment.transform()
        # ELA after augmentation: the photo stays at shard resolution until then (module docstring)
        self._ela_per_sample = self.ela is not None and self.augment.active
        self.ranks, self.rank = (world_size, rank) if train else (1, 0)
        self.global_batches = self._global_batches(max_batches)
        self.epoch, self.position = 0, 0
        self._cache: dict[tuple[int, str], tuple[np.ndarray, dict[str, Any]]] | None = None

    def keep_decoded(self) -> None:
        """Keep every decoded crop (before augmentation) in memory, so later epochs and passes skip reading and
        decoding: resized and, when set, ELA'd; or, for an ELA stream that augments, the photo at shard
        resolution (ELA follows augmentation, per sample). The cache lives in the process that iterates: use it
        with a loader without workers (`make_loader(stream, 0)`). Its size: `decoded_bytes`."""
        if self._cache is None:
            self._cache = {}

    def decoded_bytes(self) -> int:
        """Bytes of every sample's decoded crop: what `keep_decoded` holds once each has been read."""
        h, w = self._crop_shape() if self._ela_per_sample else self.size
        return len(self.entries) * h * w * 3

    def _crop_shape(self) -> tuple[int, int]:
        """(H, W) of the shards' crops, from the first sample's JPEG header (the crops of a run share one size)."""
        if not self.entries:
            return (0, 0)
        e = self.entries[0]
        with open(self.shards[e.shard], "rb") as f:
            f.seek(e.image[0])
            w, h = decode_image(f.read(e.image[1])).size
        return h, w

    def _resize(self, image: Image.Image) -> Image.Image:
        if image.size != self.size[::-1]:  # PIL sizes are (w, h); resizing to the same size would copy
            image = v2.functional.resize(image, list(self.size))
        return image

    def _global_batches(self, max_batches: int | None) -> int:
        """Batches per epoch over all ranks; training drops the short one and trims to a multiple of ranks."""
        if not self.train:
            return -(-len(self.entries) // self.batch_size)
        n = list(self.counts.values())
        per_rank = len(n) * max(n) // self.batch_size // self.ranks
        if max_batches is not None:
            per_rank = min(per_rank, max_batches)
        if per_rank == 0:
            raise ValueError(
                f"{len(self.shards)} shards hold {self.counts} samples per label: "
                f"not one batch of {self.batch_size} per rank ({self.ranks} ranks)"
            )
        return per_rank * self.ranks

    def __len__(self) -> int:
        return self.global_batches // self.ranks

    def set_epoch(self, epoch: int, position: int = 0) -> None:
        """Select the epoch and the number of this rank's batches already consumed in it."""
        if not 0 <= position <= len(self):
            raise ValueError(f"position {position} outside 0..{len(self)} batches")
        self.epoch, self.position = epoch, position

    def order(self) -> np.ndarray:
        """Entry numbers of the epoch's samples, in batch order (all ranks)."""
        if not self.train:
            return np.arange(len(self.entries))
        total = self.global_batches * self.batch_size
        per_label = -(-total // len(self.by_label))
        streams = []
        for c, ix in self.by_label.items():
            cycles = -(-per_label // len(ix))
            rngs = [np.random.default_rng([self.seed, self.epoch, c, k]) for k in range(cycles)]
            streams.append(np.concatenate([rng.permutation(ix) for rng in rngs])[:per_label])
        return np.stack(streams, axis=1).reshape(-1)[:total]  # labels alternate: 0, 1, 0, 1, ...

    # -- stages --------------------------------------------------------------------------------------------
    def _owned(self) -> Iterator[tuple[int, Entry]]:
        """(place in the epoch, entry) of the samples in this rank's and worker's batches, from `position` on."""
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        order, bs = self.order(), self.batch_size
        first = self.position * self.ranks + self.rank + self.ranks * worker
        for b in range(first, self.global_batches, self.ranks * workers):
            for i in range(b * bs, min((b + 1) * bs, len(order))):
                yield i, self.entries[order[i]]

    def _reader(self, files: dict[int, BinaryIO]) -> Callable[[tuple[int, Entry]], dict[str, Any]]:
        def read(item: tuple[int, Entry]) -> dict[str, Any]:
            i, e = item
            if e.shard not in files:
                files[e.shard] = open(self.shards[e.shard], "rb")
            f = files[e.shard]
            f.seek(e.image[0])
            jpg = f.read(e.image[1])
            f.seek(e.json[0])
            meta = f.read(e.json[1])
            if len(jpg) != e.image[1] or len(meta) != e.json[1]:
                raise shard_error(self.shards[e.shard], f"sample {e.key} cut short since the shard was indexed")
            return {
                "__key__": e.key,
                "__url__": self.shards[e.shard],
                "__index__": i,
                "jpg": jpg,
                "json": meta,
                "cls": e.label,
            }

        return read

    def _check_method(self, sample: dict[str, Any]) -> dict[str, Any]:
        if self.methods is not None and sample["meta"]["method"] not in self.methods:
            raise ValueError(
                f"{sample['__url__']}: sample {sample['__key__']} is {sample['meta']['method']}, "
                f"its key says one of {sorted(self.methods)}"
            )
        return sample

    def _decode(self, sample: dict[str, Any]) -> dict[str, Any]:
        """The sample's crop as augmentation takes it (H×W×3): decoded, ELA when set, resized; for an ELA stream
        that augments, the decoded photo alone (`_augment` does the rest)."""
        try:
            image = decode_image(sample["jpg"])
        except (OSError, ValueError) as exn:
            raise shard_error(sample["__url__"], f"sample {sample['__key__']} is not a readable image ({exn})") from exn
        if not self._ela_per_sample:
            if self.ela is not None:
                # on the decoded crop at shard resolution, before resizing: what predict does (inference.prepare)
                image = error_level(image, self.ela)
            # Resize first (less to augment); PIL's kernels are single-threaded SIMD, while per-image torch ops
            # on small tensors contend for threads.
            image = self._resize(image)
        return {"__index__": sample["__index__"], "image": np.asarray(image), "meta": sample["meta"]}

    def _loader(self, files: dict[int, BinaryIO]) -> Callable[[tuple[int, Entry]], dict[str, Any]]:
        """(place, entry) → decoded sample; from the cache when it holds the entry (see `keep_decoded`)."""
        read = self._reader(files)

        def load(item: tuple[int, Entry]) -> dict[str, Any]:
            i, e = item
            hit = None if self._cache is None else self._cache.get((e.shard, e.key))
            if hit is not None:
                return {"__index__": i, "image": hit[0], "meta": hit[1]}
            sample = self._decode(self._check_method(check_sample(read(item))))
            if self._cache is not None:
                self._cache[(e.shard, e.key)] = (sample["image"], sample["meta"])
            return sample

        return load

    def _augment(self, sample: dict[str, Any]) -> dict[str, Any]:
        if not self.augment.active:
            return sample
        # Seed per sample (Augment.__call__ restores torch's global RNG after), so augmentations depend on
        # (seed, epoch, place) alone, not on workers, resume or the cache, and never disturb the trainer's RNG in
        # the main process. A new image each time: a cached crop is never changed.
        rng = random.Random(f"{self.seed}/{self.epoch}/{sample['__index__']}")
        image = self.augment(Image.fromarray(sample["image"]), rng, self._transform)
        if self._ela_per_sample:
            image = self._resize(error_level(image, self.ela))
        return {**sample, "image": np.asarray(image)}

    def _collate(self, samples: list[dict[str, Any]]) -> tuple[Any, ...]:
        # N×C×H×W in channels_last memory order, the order decoded pixels already have (no transposing copy;
        # channels_last is also what CUDA training wants)
        images = torch.from_numpy(np.stack([s["image"] for s in samples])).permute(0, 3, 1, 2)
        labels = torch.tensor([s["meta"]["label"] for s in samples], dtype=torch.float32)
        if self.train:
            return images, labels
        meta = {f: [s["meta"][f] for s in samples] for f in ("video_key", "method", "video_id", "frame_index", "label")}
        return images, labels, meta

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        files: dict[int, BinaryIO] = {}  # opened in the worker that reads them, never shared across a fork
        try:
            yield from wds.DataPipeline(
                self._owned,
                wds.map(self._loader(files)),
                wds.map(self._augment),
                wds.batched(self.batch_size, collation_fn=self._collate, partial=not self.train),
            )
        finally:
            for f in files.values():
                f.close()


def make_loader(stream: ShardStream, num_workers: int = 0, pin_memory: bool = False) -> DataLoader:
    """A DataLoader over already-batched `stream`; its own generator keeps it off the global torch RNG."""
    return DataLoader(
        stream,
        batch_size=None,
        num_workers=num_workers,
        pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(0),
        prefetch_factor=4 if num_workers else None,
        persistent_workers=False,
    )
