# The two commands of the README. Both set up what is missing first (idempotent) and then run.
CORES ?= 2
SNAKEMAKE_ARGS ?=

.PHONY: setup demo test

setup:
	@bash scripts/setup.sh

demo: setup
	.venv/bin/snakemake --cores $(CORES) $(SNAKEMAKE_ARGS)

test: setup
	.venv/bin/python -m pytest -q
