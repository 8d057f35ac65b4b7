# The two commands of the README. Both set up what is missing first (idempotent) and then run.
CORES ?= 2
SNAKEMAKE_ARGS ?=

.PHONY: setup demo test lint

setup:
	@bash scripts/setup.sh

demo: setup
	.venv/bin/snakemake --cores $(CORES) $(SNAKEMAKE_ARGS)

# CI gates besides the tests: the workflow is lint-clean (snakemake --lint exits 1 on any remark) and the
# Python tree passes ruff (rules and format in pyproject.toml; `.venv/bin/ruff format .` fixes the format).
lint: setup
	.venv/bin/snakemake --lint
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

test: setup lint
	.venv/bin/python -m pytest -q
