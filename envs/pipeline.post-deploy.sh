#!/usr/bin/env bash
# Run by Snakemake inside the conda environment of envs/pipeline.yaml right after creating it (UNTESTED, see
# there): the packages that must be installed without their dependencies, then this package, editable.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python -m pip install --no-deps -r "$here/nodeps.txt"
python -m pip install --no-deps -e "$here/.."
