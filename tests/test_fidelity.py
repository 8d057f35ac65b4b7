"""Quality stage: PSNR/SSIM/bpp of MozJPEG crops against their lossless references, summary and plot."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from conftest import png
from PIL import Image
from skimage import data
from skimage.metrics import peak_signal_noise_ratio

from dfpipe.data.compress import compress_batch
from dfpipe.data.fidelity import (
    QUALITY_COLUMNS,
    SUMMARY_COLUMNS,
    measure,
    measure_batch,
    plot,
    sample_frames,
    summarize,
)

QUALITIES = (95, 77, 60, 15, 10)


@pytest.fixture(scope="module")
def faces() -> pd.DataFrame:
    """Real and fake "videos" of 128 high × 112 wide face crops from astronaut and a cat face from chelsea."""
    rows = []
    sources = (("original", "000", 0, data.astronaut(), 20, 150), ("Deepfakes", "000_001", 1, data.chelsea(), 10, 120))
    for method, vid, label, img, y0, x0 in sources:
        for f in range(2):
            y, x = y0 + 10 * f, x0 + 6 * f
            rows.append(
                {
                    "key": f"{method}/{vid}",
                    "method": method,
                    "video_id": vid,
                    "split": "test",
                    "label": label,
                    "frame_index": f,
                    "status": "ok",
                    "crop_png": png(img[y : y + 128, x : x + 112]),
                }
            )
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def measured(faces: pd.DataFrame, cjpeg) -> dict[int, pd.DataFrame]:
    return {q: measure_batch(faces, compress_batch(faces, q, [], cjpeg, threads=2)) for q in QUALITIES}


def test_measure_batch_table(measured: dict[int, pd.DataFrame], faces: pd.DataFrame) -> None:
    for q, table in measured.items():
        assert list(table.columns) == QUALITY_COLUMNS and len(table) == len(faces)
        assert (table["quality"] == q).all()
        assert ((table["ssim"] > 0) & (table["ssim"] <= 1)).all()
        assert (table["psnr"] > 15).all() and np.isfinite(table["psnr"]).all()


def test_sample_frames_takes_evenly_spaced_frames_per_video() -> None:
    rng = np.random.default_rng(0)
    long = pd.DataFrame({"key": "Deepfakes/000_001", "frame_index": 3 * np.arange(32)})  # frames 0, 3, ..., 93
    short = pd.DataFrame({"key": "original/000", "frame_index": [5, 9, 40]})
    table = pd.concat([long, short], ignore_index=True).iloc[rng.permutation(35)]  # rows in no particular order

    picked = sample_frames(table, 8)
    assert list(picked.index) == [i for i in table.index if i in picked.index]  # the table's own order kept
    frames = {k: sorted(g["frame_index"]) for k, g in picked.groupby("key")}
    assert frames["Deepfakes/000_001"] == [3 * i for i in (0, 4, 9, 13, 18, 22, 27, 31)]  # first and last included
    assert frames["original/000"] == [5, 9, 40]  # fewer frames than asked: all of them
    assert sorted(sample_frames(table, 1)["frame_index"]) == [0, 5]  # one per video: the first
    assert sample_frames(table, None) is table
    assert sample_frames(table.iloc[:0], 8).empty


def test_measure_batch_measures_only_the_sampled_frames(faces: pd.DataFrame, cjpeg) -> None:
    jpeg = compress_batch(faces, 77, [], cjpeg, threads=2)
    table = measure_batch(faces, jpeg, frames_per_video=1)
    assert list(table.columns) == QUALITY_COLUMNS
    assert sorted(zip(table["key"], table["frame_index"])) == [("Deepfakes/000_001", 0), ("original/000", 0)]
    assert len(measure_batch(faces, jpeg, frames_per_video=8)) == len(faces)


def test_fidelity_and_size_fall_with_quality(measured: dict[int, pd.DataFrame]) -> None:
    for key in ("original/000", "Deepfakes/000_001"):
        rows = [measured[q][measured[q]["key"] == key].iloc[0] for q in QUALITIES]  # quality high to low
        psnr, ssim, bpp = ([float(r[c]) for r in rows] for c in ("psnr", "ssim", "bpp"))
        assert psnr == sorted(psnr, reverse=True) and len(set(psnr)) == len(psnr), f"{key}: PSNR {psnr}"
        assert ssim == sorted(ssim, reverse=True), f"{key}: SSIM {ssim}"
        assert bpp == sorted(bpp, reverse=True) and len(set(bpp)) == len(bpp), f"{key}: bpp {bpp}"
        assert psnr[0] > 36 and psnr[-1] < 30  # q95 near-transparent, q10 visibly degraded
        assert bpp[0] > 1.5 and bpp[-1] < 0.6


def test_measure_matches_definitions() -> None:
    ref = data.astronaut()[:64, :48]
    buf = io.BytesIO()
    Image.fromarray(ref).save(buf, format="JPEG", quality=50)
    jpeg = buf.getvalue()
    decoded = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))
    psnr, ssim, bpp = measure(ref, jpeg)
    assert psnr == pytest.approx(peak_signal_noise_ratio(ref, decoded, data_range=255))
    assert 0 < ssim < 1
    assert bpp == pytest.approx(8 * len(jpeg) / (64 * 48))
    with pytest.raises(ValueError, match=r"crop X: JPEG decodes to \(64, 48, 3\), reference crop is \(48, 64, 3\)"):
        measure(np.ascontiguousarray(ref.transpose(1, 0, 2)), jpeg, "crop X")


def test_missing_reference_is_named(faces: pd.DataFrame, measured: dict[int, pd.DataFrame], cjpeg) -> None:
    jpeg = compress_batch(faces.iloc[:1], 60, [], cjpeg, threads=1)
    with pytest.raises(ValueError, match=r"original/000 frame 0 q60: no ok crop in the faces table"):
        measure_batch(faces.iloc[1:], jpeg)
    with pytest.raises(ValueError, match=r"original/000 frame 0 q60: no ok crop in the faces table"):
        measure_batch(faces.iloc[1:], jpeg, frames_per_video=1)


def test_summary_and_plot(measured: dict[int, pd.DataFrame], tmp_path) -> None:
    summary = summarize(measured.values())
    assert list(summary.columns) == SUMMARY_COLUMNS
    assert len(summary) == 2 * len(QUALITIES) and (summary["n"] == 2).all()
    fakes = summary[summary["method"] == "Deepfakes"]
    assert list(fakes["quality"]) == sorted(QUALITIES, reverse=True)
    q77 = measured[77][measured[77]["method"] == "Deepfakes"]
    row = fakes[fakes["quality"] == 77].iloc[0]
    assert row["psnr_mean"] == pytest.approx(q77["psnr"].mean()) and row["psnr_std"] == pytest.approx(q77["psnr"].std())
    assert row["ssim_mean"] == pytest.approx(q77["ssim"].mean()) and row["bpp_mean"] == pytest.approx(q77["bpp"].mean())

    path = tmp_path / "results" / "psnr_ssim.png"
    plot(summary, path)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > im.size[1] > 200
        pixels = np.asarray(im.convert("RGB"))
    assert pixels.std() > 10  # something was drawn
    assert [p.name for p in path.parent.iterdir()] == ["psnr_ssim.png"]  # no temp file left
