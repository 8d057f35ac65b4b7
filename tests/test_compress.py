"""jpeg stage and cjpeg check: real MozJPEG, progressive output, same path for real and fake, non-MozJPEG refused."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import png
from PIL import Image
from skimage import data

from dfpipe.data.compress import JPEG_COLUMNS, compress_batch, encode
from dfpipe.tools import ToolError, cjpeg_version, find_cjpeg

SRC = Path(__file__).resolve().parents[1] / "src"


def faces_table() -> pd.DataFrame:
    """A faces-stage table: a real and a fake video with astronaut face crops (72 high × 64 wide), one miss."""
    img = data.astronaut()
    rows = []
    for method, vid, label in (("original", "000", 0), ("Deepfakes", "000_001", 1)):
        for f in range(3):
            y, x = 40 + 9 * f, 170 + 13 * label
            rows.append(
                {
                    "key": f"{method}/{vid}",
                    "method": method,
                    "video_id": vid,
                    "split": "train",
                    "label": label,
                    "frame_index": 8 * f,
                    "status": "ok",
                    "reason": None,
                    "crop_png": png(img[y : y + 72, x : x + 64]),
                    "mask_png": None,
                }
            )
    rows.append({**rows[0], "frame_index": 30, "status": "no_face", "reason": "no detection", "crop_png": None})
    return pd.DataFrame(rows)


def sof_markers(jpeg: bytes) -> set[int]:
    """Start-of-frame marker codes, walking the segment headers up to the first scan."""
    found, i = set(), 2
    while i + 4 <= len(jpeg) and jpeg[i] == 0xFF:
        marker, length = jpeg[i + 1], int.from_bytes(jpeg[i + 2 : i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            found.add(marker)
        if marker == 0xDA:
            break
        i += 2 + length
    return found


def test_find_cjpeg_is_mozjpeg(cjpeg: Path) -> None:
    version = cjpeg_version(cjpeg)
    assert version.startswith("mozjpeg version 5.0.0")
    raw = subprocess.run([str(cjpeg), "-version"], check=False, capture_output=True, text=True)
    assert "mozjpeg version 5.0.0" in raw.stderr + raw.stdout


def test_encode_is_progressive_and_decodes_at_size(cjpeg: Path) -> None:
    rgb = data.astronaut()[30:130, 150:230]  # 100 high × 80 wide
    jpeg = encode(rgb, 77, [], cjpeg)
    assert jpeg[:2] == b"\xff\xd8" and jpeg[-2:] == b"\xff\xd9"
    assert sof_markers(jpeg) == {0xC2}  # SOF2 (progressive), no baseline SOF0
    with Image.open(io.BytesIO(jpeg)) as im:
        assert im.format == "JPEG" and im.size == (80, 100)
        assert im.info.get("progressive") or im.info.get("progression")
        back = np.asarray(im.convert("RGB")).astype(float)
    assert np.abs(back - rgb).mean() < 6  # same picture, lightly compressed
    assert encode(rgb, 77, [], cjpeg) == jpeg  # deterministic encoder
    assert len(encode(rgb, 15, [], cjpeg)) < len(jpeg)


def test_encode_error_names_the_input(cjpeg: Path) -> None:
    rgb = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(RuntimeError, match=r"crop A7: .*-nosuchflag.*failed"):
        encode(rgb, 77, ["-nosuchflag"], cjpeg, name="crop A7")
    with pytest.raises(ValueError, match=r"crop B: expected an H×W×3 uint8"):
        encode(np.zeros((8, 8), np.uint8), 77, [], cjpeg, name="crop B")
    with pytest.raises(ValueError, match="quality 0 is out of range"):
        encode(rgb, 0, [], cjpeg)


def test_compress_batch_table(cjpeg: Path) -> None:
    faces = faces_table()
    out = compress_batch(faces, 60, [], cjpeg, threads=2)
    assert list(out.columns) == JPEG_COLUMNS
    assert len(out) == 6 and "status" not in out.columns  # only the ok rows, no faces-only columns
    assert list(out["frame_index"]) == [0, 8, 16, 0, 8, 16]  # input order kept
    assert (out["quality"] == 60).all() and (out["bytes"] == out["jpeg"].map(len)).all()
    version = cjpeg_version(cjpeg)
    assert set(out["encoder"]) == {f"{version} -quality 60"}
    for rec, ref in zip(out.itertuples(), faces[faces["status"] == "ok"].itertuples(), strict=True):
        # real and fake took the same path: identical to a direct encode of the same crop
        rgb = np.asarray(Image.open(io.BytesIO(ref.crop_png)).convert("RGB"))
        assert rec.jpeg == encode(rgb, 60, [], cjpeg)
        assert sof_markers(rec.jpeg) == {0xC2}
        with Image.open(io.BytesIO(rec.jpeg)) as im:
            assert im.size == (64, 72)
    assert set(out.loc[out["label"] == 1, "method"]) == {"Deepfakes"}


def test_compress_batch_records_flags_and_survives_parquet(cjpeg: Path, tmp_path: Path) -> None:
    from dfpipe.io import write_parquet

    write_parquet(tmp_path / "faces.parquet", faces_table())  # as the faces stage hands it over
    out = compress_batch(pd.read_parquet(tmp_path / "faces.parquet"), 77, ["-baseline"], cjpeg, threads=1)
    assert len(out) == 6
    assert set(out["encoder"]) == {f"{cjpeg_version(cjpeg)} -quality 77 -baseline"}
    assert all(sof_markers(j) == {0xC0} for j in out["jpeg"])  # the flag really reached cjpeg
    write_parquet(tmp_path / "b0000.parquet", out)
    back = pd.read_parquet(tmp_path / "b0000.parquet")
    assert list(back["jpeg"]) == list(out["jpeg"])
    empty = compress_batch(faces_table().iloc[-1:], 77, [], cjpeg, threads=2)
    assert list(empty.columns) == JPEG_COLUMNS and len(empty) == 0


def test_compress_batch_names_a_broken_crop(cjpeg: Path) -> None:
    faces = faces_table()
    faces.loc[4, "crop_png"] = b"not a png"
    with pytest.raises(ValueError, match=r"Deepfakes/000_001 frame 8: crop_png is empty or not a readable image"):
        compress_batch(faces, 77, [], cjpeg, threads=2)
    faces = faces_table()
    faces.loc[2, "crop_png"] = None
    with pytest.raises(ValueError, match=r"original/000 frame 16: crop_png is empty"):
        compress_batch(faces, 77, [], cjpeg, threads=2)


def fake_cjpeg(tmp_path: Path, banner: str) -> Path:
    path = tmp_path / "cjpeg"
    path.write_text(f"#!/bin/sh\necho '{banner}' >&2\n")
    path.chmod(0o755)
    return path


def test_libjpeg_turbo_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = fake_cjpeg(tmp_path, "libjpeg-turbo version 2.1.5 (build 20230203)")
    message = rf"{re.escape(str(fake))}: not MozJPEG .*libjpeg-turbo version 2.1.5.*scripts/setup.sh"
    with pytest.raises(ToolError, match=message):
        cjpeg_version(fake)
    monkeypatch.setenv("DFPIPE_CJPEG", str(fake))
    assert find_cjpeg() == fake  # the env override is honoured; the version check still refuses it
    with pytest.raises(ToolError, match="not MozJPEG"):
        compress_batch(faces_table(), 77, [], fake, threads=1)


@pytest.mark.skipif(not Path("/usr/bin/cjpeg").is_file(), reason="Debian's libjpeg-turbo-progs is not installed")
def test_debian_cjpeg_is_refused() -> None:
    with pytest.raises(ToolError, match=r"/usr/bin/cjpeg: not MozJPEG .*libjpeg-turbo"):
        cjpeg_version(Path("/usr/bin/cjpeg"))


def test_check_cjpeg_cli(tmp_path: Path, cjpeg: Path) -> None:
    def cli(path: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "dfpipe.tools", "check-cjpeg", str(path)],
            check=False,
            capture_output=True,
            text=True,
            env={"PYTHONPATH": str(SRC)},
        )

    good = cli(cjpeg)
    assert good.returncode == 0 and good.stdout.startswith("mozjpeg version 5.0.0")
    bad = cli(fake_cjpeg(tmp_path, "libjpeg-turbo version 2.1.5 (build 20230203)"))
    assert bad.returncode == 1 and "not MozJPEG" in bad.stderr and bad.stdout == ""
    missing = cli(tmp_path / "nope" / "cjpeg")
    assert missing.returncode == 1 and "run scripts/setup.sh" in missing.stderr


def test_find_cjpeg_missing_says_run_setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DFPIPE_CJPEG", raising=False)
    monkeypatch.setenv("DFPIPE_TOOLS", str(tmp_path))
    with pytest.raises(
        FileNotFoundError, match=rf"{re.escape(str(tmp_path))}/bin/cjpeg: cjpeg not found.*scripts/setup.sh"
    ):
        find_cjpeg()


def test_debian_cjpeg_really_differs(cjpeg: Path) -> None:
    """Why the refusal matters: same quality number, different bytes and a baseline stream."""
    debian = shutil.which("cjpeg", path="/usr/bin")
    if debian is None:
        pytest.skip("Debian's libjpeg-turbo-progs is not installed")
    ppm = b"P6\n64 72\n255\n" + data.astronaut()[40:112, 170:234].tobytes()
    turbo = subprocess.run([debian, "-quality", "77"], input=ppm, capture_output=True, check=True).stdout
    moz = encode(data.astronaut()[40:112, 170:234], 77, [], cjpeg)
    assert sof_markers(turbo) == {0xC0} and sof_markers(moz) == {0xC2}
    assert len(moz) < len(turbo)
