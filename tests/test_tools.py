"""External tools: the cjpeg version recorded in results is the MozJPEG version without its build date."""

from __future__ import annotations

from pathlib import Path

import pytest

from dfpipe.data.compress import encoder_id
from dfpipe.tools import ToolError, cjpeg_version


def fake_cjpeg(folder: Path, banner: str) -> Path:
    """A stand-in binary that prints `banner` on stderr, as cjpeg -version does."""
    path = folder / "cjpeg"
    path.write_text(f"#!/bin/sh\necho '{banner}' >&2\n")
    path.chmod(0o755)
    return path


@pytest.mark.parametrize("build", ["20261122", "20270101"])
def test_version_leaves_out_the_build_date(tmp_path: Path, build: str) -> None:
    cjpeg = fake_cjpeg(tmp_path, f"mozjpeg version 5.0.0 (build {build})")
    assert cjpeg_version(cjpeg) == "mozjpeg version 5.0.0"
    # The encoder column of every JPEG table: version and flags only.
    assert encoder_id(cjpeg, 77, ["-baseline"]) == "mozjpeg version 5.0.0 -quality 77 -baseline"


def test_non_mozjpeg_is_still_refused(tmp_path: Path) -> None:
    with pytest.raises(ToolError, match="not MozJPEG"):
        cjpeg_version(fake_cjpeg(tmp_path, "libjpeg-turbo version 2.1.5 (build 20230203)"))
