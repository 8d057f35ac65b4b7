"""Shard loader: balanced, seeded and resumable training batches; complete ordered evaluation; clear errors."""

from __future__ import annotations

import io
import json
import random
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import webdataset as wds
from PIL import Image
from torchvision.transforms import v2

from dfpipe.data.loader import Augment, ShardStream, index_shards, make_loader, normalize
from dfpipe.data.shards import write_split
from dfpipe.io import write_json
from dfpipe.models.ela import ELA, error_level

Q = 77
SIZE = 16


def sample_image(k: int, label: int, noise: bool = False) -> np.ndarray:
    """A flat 16² image that encodes sample number k in red/green and the label in blue (dark real, bright
    fake), so batches can be traced back to samples after JPEG; or textured noise when `noise`."""
    if noise:
        return np.random.default_rng(k).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    img = np.empty((SIZE, SIZE, 3), np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 16 * (k % 16) + 8, 16 * (k // 16) + 8, 215 if label else 40
    return img


def make_shards(
    root: Path,
    split: str,
    videos: list[tuple[str, str, int]],
    frames: int = 3,
    n_shards: int = 2,
    quality: int = Q,
    noise: bool = False,
    first: int = 0,
    looks: list[int] | None = None,
) -> list[Path]:
    """Shards of (method, video_id, label) videos written by the shards stage; sample k = first + running number.

    `looks`: per video, the label its pixels show (default: its own label)."""
    rows = []
    for v, (method, vid, label) in enumerate(videos):
        for f in range(frames):
            buf = io.BytesIO()
            shown = label if looks is None else looks[v]
            Image.fromarray(sample_image(first + len(rows), shown, noise)).save(buf, format="JPEG", quality=95)
            rows.append(
                {
                    "key": f"{method}/{vid}",
                    "method": method,
                    "video_id": vid,
                    "split": split,
                    "label": label,
                    "frame_index": 10 * f,
                    "quality": quality,
                    "jpeg": buf.getvalue(),
                }
            )
    out = root / f"q{quality}"
    columns = ["key", "method", "video_id", "split", "label", "frame_index", "quality", "jpeg"]
    counts = write_split([pd.DataFrame(rows, columns=columns)], quality, split, n_shards, out)
    write_json(out / f"{split}.counts.json", counts)  # as the shards rule does: the readers check against it
    return [out / f"{split}-{i:04d}.tar" for i in range(n_shards)]


def videos(real: int, fake: int, offset: int = 0) -> list[tuple[str, str, int]]:
    return [("original", f"{offset + i:03d}", 0) for i in range(real)] + [
        ("Deepfakes", f"{offset + i:03d}_{offset + i + 1:03d}", 1) for i in range(fake)
    ]


def sample_ids(images: torch.Tensor) -> list[int]:
    """Sample numbers back from flat uint8 images."""
    rg = (images[:, :2].float().mean((2, 3)) - 8) / 16
    return [int(r) + 16 * int(g) for r, g in rg.round().int().tolist()]


def stream(shards: list[Path], train: bool = True, batch_size: int = 4, **kw) -> ShardStream:
    return ShardStream(shards, batch_size=batch_size, input_size=SIZE, train=train, **kw)


def batches(s: ShardStream, epoch: int = 0, position: int = 0, workers: int = 0) -> list[tuple]:
    s.set_epoch(epoch, position)
    return list(make_loader(s, workers))


@pytest.fixture(scope="module")
def train_shards(tmp_path_factory) -> list[Path]:
    # 2 real videos (6 samples) against 4 fake ones (12 samples): the real ones must be oversampled
    return make_shards(tmp_path_factory.mktemp("shards"), "train", videos(2, 4))


def test_training_batches_are_balanced_and_cover_the_majority_once(train_shards) -> None:
    s = stream(train_shards)
    assert s.counts == {0: 6, 1: 12}
    got = batches(s)
    assert len(got) == len(s) == 6  # 2 × 12 samples / 4
    for images, labels in got:
        assert images.shape == (4, 3, SIZE, SIZE) and images.dtype == torch.uint8
        assert images.is_contiguous(memory_format=torch.channels_last)
        assert labels.tolist().count(0.0) == 2 and labels.tolist().count(1.0) == 2
        # the label is readable from the pixels too: blue dark for real, bright for fake
        assert ((images[:, 2].float().mean((1, 2)) > 128).float() == labels).all()
    ids = [i for images, labels in got for i, lab in zip(sample_ids(images), labels) if lab == 1]
    assert sorted(ids) == list(range(6, 18))  # every fake exactly once
    real = [i for images, labels in got for i, lab in zip(sample_ids(images), labels) if lab == 0]
    assert sorted(set(real)) == list(range(6)) and len(real) == 12  # every real twice


def test_order_is_fixed_by_seed_and_epoch(train_shards) -> None:
    def order(seed: int, epoch: int) -> list[int]:
        return [i for images, _ in batches(stream(train_shards, seed=seed), epoch) for i in sample_ids(images)]

    assert order(3, 0) == order(3, 0)
    assert order(3, 0) != order(4, 0)
    assert order(3, 0) != order(3, 1)


def test_resume_position_reproduces_the_remaining_batches(train_shards) -> None:
    aug = Augment(hflip=0.5, jpeg=1.0, jitter=0.5, blur=0.5)
    full = batches(stream(train_shards, seed=5, augment=aug), epoch=1)
    rest = batches(stream(train_shards, seed=5, augment=aug), epoch=1, position=4)
    assert len(rest) == len(full) - 4
    for (a, la), (b, lb) in zip(full[4:], rest):
        assert torch.equal(a, b) and torch.equal(la, lb)
    # two workers split the decoding but deliver the same batches in the same order
    two = batches(stream(train_shards, seed=5, augment=aug), epoch=1, position=1, workers=2)
    assert len(two) == len(full) - 1 and all(torch.equal(a, b) for (a, _), (b, _) in zip(full[1:], two))


def test_decoded_cache_gives_the_same_batches_without_reading_again(tmp_path) -> None:
    """A stream keeping its decoded crops yields the same batches as one decoding every time, epoch after epoch,
    with augmentations (a cached crop is never changed by them), and once it holds every sample it no longer
    reads the shards."""
    shards = make_shards(tmp_path / "s", "train", videos(2, 4), noise=True)
    aug = Augment(hflip=0.5, jpeg=0.5, jitter=0.5)
    cached, plain = stream(shards, seed=3, augment=aug), stream(shards, seed=3, augment=aug)
    cached.keep_decoded()
    assert cached.decoded_bytes() == 18 * SIZE * SIZE * 3
    for epoch in range(3):
        for (a, la), (b, lb) in zip(batches(cached, epoch), batches(plain, epoch), strict=True):
            assert torch.equal(a, b) and torch.equal(la, lb)
    ev_cached, ev_plain = stream(shards, train=False), stream(shards, train=False)
    ev_cached.keep_decoded()
    first = batches(ev_cached)
    for shard in shards:  # every sample is in memory now: the shards are not read again
        shard.rename(shard.with_suffix(".gone"))
    for (a, la, ma), (b, lb, mb) in zip(batches(ev_cached), first, strict=True):
        assert torch.equal(a, b) and torch.equal(la, lb) and ma == mb
    assert [torch.equal(a, b) for (a, _), (b, _) in zip(batches(cached, 3), batches(cached, 3))] == [True] * 6
    with pytest.raises(FileNotFoundError):
        batches(ev_plain)


def test_normalize_per_channel_and_uniform(train_shards) -> None:
    images = batches(stream(train_shards, train=False))[0][0]
    unit = images.float() / 255
    mean, std = [0.1, 0.5, 0.9], [0.2, 0.5, 1.0]
    expected = (unit - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert torch.allclose(normalize(images, mean, std), expected, atol=1e-5)
    half = normalize(images, [0.5] * 3, [0.5] * 3)  # the scalar path
    assert half.dtype == torch.float32 and torch.allclose(half, unit * 2 - 1, atol=1e-5)
    assert half.is_contiguous(memory_format=torch.channels_last)  # the loader's layout is kept


def test_ranks_get_disjoint_batches(train_shards) -> None:
    whole = batches(stream(train_shards, batch_size=2))
    ranks = [batches(stream(train_shards, batch_size=2, rank=r, world_size=2)) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == len(whole) // 2
    interleaved = [b for pair in zip(*ranks) for b in pair]
    assert all(torch.equal(a[0], b[0]) for a, b in zip(whole, interleaved))


def test_max_batches_cuts_the_epoch(train_shards) -> None:
    assert len(batches(stream(train_shards, max_batches=2))) == 2


def test_eval_yields_every_sample_once_in_order_with_metadata(train_shards) -> None:
    s = stream(train_shards, train=False, batch_size=5)
    got = batches(s)
    assert [len(b[1]) for b in got] == [5, 5, 5, 3]  # 18 samples, last batch short
    ids = [i for images, _, _ in got for i in sample_ids(images)]
    assert sorted(ids) == list(range(18))
    meta = {k: [v for _, _, m in got for v in m[k]] for k in got[0][2]}
    assert set(meta) == {"video_key", "method", "video_id", "frame_index", "label"}
    # shard by shard, samples as written (sorted by video, then frame); labels match the pixels
    expected = []
    for shard in train_shards:
        with tarfile.open(shard) as tar:
            expected += [json.loads(tar.extractfile(m).read())["video_key"] for m in tar if m.name.endswith(".json")]
    assert meta["video_key"] == expected
    assert all(k.startswith(("original/q77/", "Deepfakes/q77/")) for k in meta["video_key"])
    labels = [lab for _, labels, _ in got for lab in labels.tolist()]
    from_keys = [0 if k.startswith("original") else 1 for k in meta["video_key"]]
    assert meta["label"] == [int(x) for x in labels] == from_keys
    again = batches(s, epoch=3)  # no shuffle, whatever the epoch
    assert all(torch.equal(a[0], b[0]) and a[2] == b[2] for a, b in zip(again, got))


def test_jpeg_augmentation_changes_the_image(tmp_path) -> None:
    shards = make_shards(tmp_path, "train", videos(1, 1), frames=2, n_shards=1, noise=True)
    plain = batches(stream(shards, augment=Augment(hflip=0.0)))
    jpeg = batches(stream(shards, augment=Augment(hflip=0.0, jpeg=1.0, jpeg_quality=(10, 10))))
    flip = batches(stream(shards, augment=Augment(hflip=1.0)))
    for (a, _), (b, _), (c, _) in zip(plain, jpeg, flip):
        assert (a.float() - b.float()).abs().mean() > 5  # quality 10 visibly degrades textured noise
        assert torch.equal(a.flip(-1), c)


def test_ela_is_computed_on_the_augmented_photo(tmp_path) -> None:
    """Training: blur and JPEG re-compression act on the photo at shard resolution, ELA on the result, then the
    resize; the old order (ELA and resize at decoding, augmenting the ELA image) fails here. Evaluation, which
    does not augment, stays the ELA of the decoded crop, resized (what predict computes)."""
    shards = make_shards(tmp_path, "train", videos(1, 2), n_shards=1, noise=True)
    half, ela = SIZE // 2, ELA()
    # probability 1 and one-point ranges: every sample gets the same augmentation whatever the draws
    aug = Augment(jpeg=1.0, jpeg_quality=(30, 30), blur=1.0, blur_sigma=(1.0, 1.0))
    photos = [
        image.permute(1, 2, 0).numpy() for images, _, _ in batches(stream(shards, train=False)) for image in images
    ]

    def resized(image: Image.Image) -> np.ndarray:
        return np.asarray(v2.functional.resize(image, [half, half]))

    def augmented(image: Image.Image) -> Image.Image:
        return aug(image, random.Random(0))

    new = {resized(error_level(augmented(Image.fromarray(p)), ela)).tobytes() for p in photos}
    old = {
        np.asarray(augmented(Image.fromarray(resized(error_level(Image.fromarray(p), ela))))).tobytes() for p in photos
    }
    assert len(new) == len(photos) and not new & old  # the two orders give different inputs here
    plain = ShardStream(shards, batch_size=2, input_size=half, train=True, augment=aug, ela=ela)
    cached = ShardStream(shards, batch_size=2, input_size=half, train=True, augment=aug, ela=ela)
    cached.keep_decoded()
    assert cached.decoded_bytes() == len(photos) * SIZE * SIZE * 3  # the photos, kept at shard resolution
    for epoch in range(2):
        got = batches(plain, epoch)
        assert all(torch.equal(a, b) for (a, _), (b, _) in zip(got, batches(cached, epoch), strict=True))
        assert {image.permute(1, 2, 0).numpy().tobytes() for images, _ in got for image in images} <= new
    evaluation = ShardStream(shards, batch_size=4, input_size=half, train=False, ela=ela)
    assert evaluation.decoded_bytes() == len(photos) * half * half * 3
    shown = [image.permute(1, 2, 0).numpy() for images, _, _ in batches(evaluation) for image in images]
    assert all(
        np.array_equal(s, resized(error_level(Image.fromarray(p), ela))) for s, p in zip(shown, photos, strict=True)
    )


def test_missing_and_empty_shards_are_named(tmp_path, train_shards) -> None:
    gone = tmp_path / "q77" / "train-0009.tar"
    with pytest.raises(FileNotFoundError, match="train-0009.tar"):
        stream([train_shards[0], gone])
    empty = make_shards(tmp_path, "val", [], n_shards=2)
    with pytest.raises(ValueError, match=r"no samples in any of the shards: .*val-0000.tar.*val-0001.tar"):
        stream(empty)
    # an empty shard beside a full one is fine (a split may have fewer videos than shards)
    assert stream([*empty, *train_shards]).counts == {0: 6, 1: 12}


def test_shard_of_another_quality_or_split_is_refused(tmp_path, train_shards) -> None:
    with pytest.raises(ValueError, match="q77 train shard, but q60 train was asked"):
        stream(train_shards, quality=60, split="train")
    with pytest.raises(ValueError, match="q77 train shard, but q77 val was asked"):
        index_shards(train_shards, quality=77, split="val")
    # a q77 shard copied under q60/: its samples say q77, the path says q60
    moved = tmp_path / "q60" / "train-0000.tar"
    moved.parent.mkdir()
    shutil.copy(train_shards[0], moved)
    with pytest.raises(
        ValueError, match=r"q60/train-0000.tar: sample .* is q77 train, but its shard was asked for as q60"
    ):
        batches(stream([moved], train=False))


def test_samples_lacking_fields_are_named(tmp_path) -> None:
    path = tmp_path / "q77" / "test-0000.tar"
    path.parent.mkdir()
    buf = io.BytesIO()
    Image.fromarray(sample_image(0, 0)).save(buf, format="JPEG")
    with wds.TarWriter(str(path)) as tar:
        tar.write(
            {
                "__key__": "a",
                "jpg": buf.getvalue(),
                "cls": b"0",
                "json": json.dumps({"label": 0, "quality": 77, "split": "test"}).encode(),
            }
        )
        tar.write({"__key__": "b", "jpg": buf.getvalue(), "cls": b"1"})
    with pytest.raises(ValueError, match=r"test-0000.tar: sample b lacks \['json'\]"):
        stream([path], train=False)
    with wds.TarWriter(str(path)) as tar:
        tar.write(
            {
                "__key__": "a",
                "jpg": buf.getvalue(),
                "cls": b"0",
                "json": json.dumps({"label": 0, "quality": 77, "split": "test"}).encode(),
            }
        )
    with pytest.raises(ValueError, match=r"test-0000.tar: sample a json lacks \['method', 'video_key'"):
        batches(stream([path], train=False))
    meta = {
        "label": 0,
        "method": "original",
        "video_key": "original/q77/000",
        "video_id": "000",
        "frame_index": 0,
        "quality": 77,
        "split": "test",
    }
    with wds.TarWriter(str(path)) as tar:
        tar.write({"__key__": "a", "jpg": buf.getvalue()[:100], "cls": b"0", "json": json.dumps(meta).encode()})
    with pytest.raises(ValueError, match=r"test-0000.tar: sample a is not a readable image"):
        batches(stream([path], train=False))


def test_methods_filter_keeps_only_those_methods(tmp_path) -> None:
    shards = make_shards(tmp_path, "test", videos(2, 2) + [("FaceSwap", "900_901", 1)], n_shards=1)
    s = stream(shards, train=False, methods=["original", "FaceSwap"])
    assert s.counts == {0: 6, 1: 3}
    assert {m for _, _, meta in batches(s) for m in meta["method"]} == {"original", "FaceSwap"}
    with pytest.raises(ValueError, match="no samples of methods \\['Face2Face'\\]"):
        stream(shards, methods=["Face2Face"])


def test_index_finds_members_where_tarfile_does(tmp_path, train_shards) -> None:
    """The header scanner (the loader's fast index) agrees with tarfile, long pax and GNU names included."""

    def by_tarfile(path: Path) -> dict[str, tuple[int, int]]:
        with tarfile.open(path) as tar:
            return {m.name: (m.offset_data, m.size) for m in tar if not m.name.endswith(".cls")}

    def by_index(path: Path) -> dict[str, tuple[int, int]]:
        return {
            f"{e.key}.{ext}": place for e in index_shards([path]) for ext, place in (("jpg", e.image), ("json", e.json))
        }

    for shard in train_shards:
        assert by_index(shard) == by_tarfile(shard)
    key = "original-" + "9" * 120 + "-00000"  # longer than a plain tar header's 100 bytes
    meta = json.dumps({"label": 0}).encode()
    for fmt in (tarfile.PAX_FORMAT, tarfile.GNU_FORMAT):
        path = tmp_path / str(fmt) / "q77" / "test-0000.tar"
        path.parent.mkdir(parents=True)
        with tarfile.open(path, "w", format=fmt) as tar:
            for ext, data in (("jpg", b"\xff\xd8jpeg"), ("cls", b"0"), ("json", meta)):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        assert by_index(path) == by_tarfile(path) and len(by_index(path)) == 2
    junk = tmp_path / "q77" / "test-0001.tar"
    junk.parent.mkdir()
    junk.write_bytes(b"not a tar " * 200)
    with pytest.raises(ValueError, match=r"test-0001.tar: not a tar archive.*rerun snakemake"):
        index_shards([junk])
