"""The registry of test-source kinds (dfpipe.evaluation.test_sources): one list the schema, the rule files and the
scan job agree on, and scan jobs whose code hash covers their kinds' modules and nothing they do not run."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dfpipe import codehash
from dfpipe import config as dfconfig
from dfpipe.evaluation import test_sources

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "dfpipe"


def test_the_registry_lists_the_kinds_the_schema_allows():
    schema = yaml.safe_load(dfconfig.SCHEMA_PATH.read_text())
    entry = schema["properties"]["evaluate"]["properties"]["test_sources"]["items"]
    assert list(test_sources.KINDS) == entry["properties"]["kind"]["enum"]
    assert test_sources.BUILT == ("ganfaces", "ffpp_tree")


@pytest.mark.parametrize("kind", list(test_sources.KINDS))
def test_each_kind_has_its_module(kind):
    module = test_sources.module(kind)
    assert module.__name__ == f"dfpipe.evaluation.test_sources.{kind}" and callable(module.scan_entry)


def test_a_kinds_job_reads_only_the_config_sections_it_needs():
    """The scan job's params: a change to the faces settings reruns the FF++-tree crops only, one to the main
    dataset the GAN-face set only."""
    config = dfconfig.validate({})
    sections = {k: test_sources.config_sections(config, {"name": k, "kind": k}) for k in test_sources.KINDS}
    assert sections == {
        "ganfaces": {"source": config["source"], "demo": config["demo"]},
        "images": {},
        "ffpp_tree": {"faces": config["faces"]},
    }
    with pytest.raises(ValueError, match=r"evaluate.test_sources\[x\]: kind 'video'; allowed \['ganfaces', "):
        test_sources.config_sections(config, {"name": "x", "kind": "video"})


def test_the_test_source_jobs_hash_what_they_run_and_not_the_measure():
    """A change to the PSNR/SSIM measure (dfpipe.data.fidelity) reruns neither the test sources' builds nor their
    shards, so neither the models scored on them, only the measuring jobs; a change to a kind's module reruns its
    build."""
    build, shards, measure = (
        codehash.script_modules(REPO / "scripts" / f"{name}.py", PACKAGE)
        for name in ("test_source", "test_source_shards", "test_source_fidelity")
    )
    assert {f"dfpipe.evaluation.test_sources.{kind}" for kind in test_sources.KINDS} <= build
    for modules in (build, shards):
        assert "dfpipe.data.fidelity" not in modules
        assert "dfpipe.evaluation.crossdataset" not in modules  # the matrix's code, and the probes' with it
    assert "dfpipe.data.fidelity" in measure
