"""External tools the pipeline runs: MozJPEG's cjpeg, found and verified before any image is encoded.

Only MozJPEG is accepted: libjpeg-turbo's cjpeg (Debian's) takes the same flags but writes baseline JPEGs
with other tables, so the same quality number would mean a different compression.
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import subprocess
import sys
from pathlib import Path

from dfpipe.assets import tools_dir

CJPEG_ENV = "DFPIPE_CJPEG"
MOZJPEG_BANNER = "mozjpeg version"
# "mozjpeg version 5.0.0 (build 20261122)": the build date differs between two builds of the same source
VERSION_NUMBER = re.compile(r"^(mozjpeg version \S+)", re.IGNORECASE)


class ToolError(RuntimeError):
    """An external tool is missing or is not the one the pipeline requires; the message says which and why."""


def find_cjpeg() -> Path:
    """Path of MozJPEG's cjpeg: $DFPIPE_CJPEG if set, else <tools_dir()>/bin/cjpeg (built by scripts/setup.sh)."""
    configured = os.environ.get(CJPEG_ENV)
    path = Path(configured) if configured else tools_dir() / "bin" / "cjpeg"
    if not path.is_file():
        origin = f"${CJPEG_ENV}" if configured else "the tools folder"
        raise FileNotFoundError(f"{path}: cjpeg not found (from {origin}); run scripts/setup.sh to build MozJPEG")
    if not os.access(path, os.X_OK):
        raise ToolError(f"{path}: cjpeg is not executable; run scripts/setup.sh to rebuild MozJPEG")
    return path


@functools.cache
def cjpeg_version(path: Path) -> str:
    """Version of MozJPEG's cjpeg without its build date, e.g. "mozjpeg version 5.0.0" from `cjpeg -version`
    saying "mozjpeg version 5.0.0 (build 20260101)"; refuse anything that is not MozJPEG.

    Results record this string (provenance, the `encoder` column of JPEG tables): with the date in it, two
    identical builds of the encoder on two days would look like different encoders."""
    path = Path(path)
    try:
        proc = subprocess.run([str(path), "-version"], check=False, capture_output=True, text=True, timeout=30)
    except OSError as exc:
        raise ToolError(f"{path}: cannot run cjpeg ({exc}); run scripts/setup.sh to build MozJPEG") from exc
    # cjpeg prints its banner on stderr; look at both streams so a wrapper script works too.
    lines = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
    banner = next((ln for ln in lines if "version" in ln.lower()), lines[0] if lines else "(no output)")
    if not banner.lower().startswith(MOZJPEG_BANNER):
        raise ToolError(
            f"{path}: not MozJPEG (`cjpeg -version` says {banner!r}); the pipeline needs MozJPEG's cjpeg "
            "(Debian's libjpeg-turbo cjpeg compresses differently at the same quality); run scripts/setup.sh"
        )
    return VERSION_NUMBER.match(banner).group(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dfpipe.tools", description="Check the pipeline's external tools.")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check-cjpeg", help="print the cjpeg version; exit 1 unless it is MozJPEG")
    check.add_argument("path", nargs="?", type=Path, default=None, help="cjpeg binary (default: find_cjpeg())")
    args = parser.parse_args(argv)
    try:
        path = args.path if args.path is not None else find_cjpeg()
        if not path.is_file():
            raise FileNotFoundError(f"{path}: cjpeg not found; run scripts/setup.sh to build MozJPEG")
        print(cjpeg_version(path))
    except (OSError, ToolError) as exc:
        print(f"check-cjpeg: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
