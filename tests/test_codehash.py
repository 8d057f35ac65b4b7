"""Which dfpipe source a rule script runs, and the hash that reruns a stage when that source changes."""

from __future__ import annotations

from pathlib import Path

from dfpipe import codehash

REPO = Path(__file__).resolve().parents[1]


def make_package(root: Path) -> Path:
    pkg = root / "dfpipe"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text('__version__ = "1"\n')
    (pkg / "runlog.py").write_text("def to_file(path): ...\n")
    (pkg / "io.py").write_text("def write(): ...\n")
    (pkg / "stage.py").write_text("from .io import write\n\ndef run():\n    from .sub import helper\n")
    (pkg / "sub" / "__init__.py").write_text("from .. import io\n")
    (pkg / "sub" / "helper.py").write_text("x = 1\n")
    (pkg / "other.py").write_text("y = 2\n")
    scripts = root / "scripts"
    scripts.mkdir()
    (scripts / "stage.py").write_text("import json\nfrom dfpipe import runlog, stage\n")
    (scripts / "other.py").write_text("from dfpipe.other import y\n")
    return pkg


def test_a_script_runs_its_modules_and_their_relative_and_lazy_imports(tmp_path):
    pkg = make_package(tmp_path)
    mods = codehash.script_modules(tmp_path / "scripts" / "stage.py", pkg)
    # Importing dfpipe.sub.helper runs dfpipe/sub/__init__.py too.
    assert mods == {"dfpipe", "dfpipe.runlog", "dfpipe.stage", "dfpipe.io", "dfpipe.sub.helper", "dfpipe.sub"}


def test_the_hash_follows_the_source_a_stage_runs_and_nothing_else(tmp_path):
    pkg = make_package(tmp_path)
    before = codehash.script_hashes(tmp_path / "scripts", pkg)
    (pkg / "sub" / "helper.py").write_text("x = 3\n")  # imported lazily, inside a function
    after = codehash.script_hashes(tmp_path / "scripts", pkg)
    assert after["stage"] != before["stage"] and after["other"] == before["other"]
    (pkg / "runlog.py").write_text("def to_file(path): return print\n")  # log lines only
    (pkg / "__init__.py").write_text('__version__ = "2"\n')
    assert codehash.script_hashes(tmp_path / "scripts", pkg) == after


def test_the_pipeline_scripts_map_to_their_stage_modules():
    pkg = REPO / "src" / "dfpipe"
    faces = codehash.script_modules(REPO / "scripts" / "faces.py", pkg)
    assert {"dfpipe.data.faces", "dfpipe.data.frames", "dfpipe.io"} <= faces
    manifest = codehash.script_modules(REPO / "scripts" / "manifest.py", pkg)
    assert "dfpipe.data.manifest" in manifest and "dfpipe.data.faces" not in manifest
    hashes = codehash.script_hashes(REPO / "scripts", pkg)
    assert set(hashes) == {p.stem for p in (REPO / "scripts").glob("*.py")}
