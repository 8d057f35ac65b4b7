"""The cluster profiles run the tiny workflow: profiles/slurm through the SLURM executor plugin with stand-in
sbatch/srun/sacct (tests/standins/slurm.py), profiles/cluster-generic through its local submit command."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_workflow import planned, tiny_config

REPO = Path(__file__).resolve().parents[1]
STANDIN = Path(__file__).resolve().parent / "standins" / "slurm.py"
pytestmark = pytest.mark.slow

# The profiles are site templates; `--workflow-profile none` keeps profiles/default from overriding them.
SLURM = [
    "--profile",
    str(REPO / "profiles/slurm"),
    "--workflow-profile",
    "none",
    "--slurm-init-seconds-before-status-checks",
    "1",
    "--slurm-status-command",
    "sacct",
]
GENERIC = [
    "--profile",
    str(REPO / "profiles/cluster-generic"),
    "--workflow-profile",
    "none",
    "--jobs",
    "2",
    "--seconds-between-status-checks",
    "2",
]
TRAIN = {
    "detectors": [{"name": "meso4", "model": "meso4", "pretrained": "none", "input_size": 64}],
    "train": {
        "qualities": [77],
        "epochs": 1,
        "max_steps_per_epoch": 2,
        "batch_size": 8,
        "generalization": {"detectors": ["meso4"]},
    },
    "evaluate": {"bootstrap": 10},
}


@pytest.fixture(scope="module")
def code(tmp_path_factory) -> Path:
    """A snapshot of the workflow and its code (other entries linked): edits made to the repository while these
    long runs go on must not change their rules' code hashes and rerun half of the DAG."""
    dest = tmp_path_factory.mktemp("repo")
    for entry in REPO.iterdir():
        if entry.name in ("Snakefile", "workflow", "scripts", "src"):
            copy = shutil.copytree if entry.is_dir() else shutil.copy2
            copy(
                entry,
                dest / entry.name,
                **({"ignore": shutil.ignore_patterns("__pycache__")} if entry.is_dir() else {}),
            )
        elif not entry.name.startswith("."):
            (dest / entry.name).symlink_to(entry)
    (dest / ".venv").symlink_to(REPO / ".venv")
    return dest


def run(work: Path, config: dict, *args: str, env: dict, code: Path, check: bool = True) -> subprocess.CompletedProcess:
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(code / "Snakefile"),
        "--directory",
        str(work),
        "--configfile",
        str(work / "config.yaml"),
        "--cores",
        "2",
        *args,
    ]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env={**env, "PYTHONPATH": str(code / "src")}, timeout=900
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def profile_rules(profile: Path) -> set[str]:
    settings = yaml.safe_load((profile / "config.yaml").read_text())
    return set().union(*(settings.get(key) or {} for key in ("set-threads", "set-resources", "groups")))


def test_profiles_name_only_rules_of_the_workflow(tmp_path, ffpp_tree):
    """A renamed rule would silently lose its threads, resources and group: every name in the profiles must exist."""
    proc = run(tmp_path, tiny_config(ffpp_tree), "--list-rules", env=dict(os.environ), code=REPO)
    rules = set(proc.stdout.split())
    for name in ("default", "slurm", "cluster-generic"):
        unknown = profile_rules(REPO / "profiles" / name) - rules
        assert not unknown, f"profiles/{name}/config.yaml names rules the workflow lacks: {sorted(unknown)}"
    slurm, generic = (
        yaml.safe_load((REPO / f"profiles/{n}/config.yaml").read_text()) for n in ("slurm", "cluster-generic")
    )
    assert {"faces", "compress"} <= {r for r, g in slurm["groups"].items() if g == "batches"}
    for key in ("groups", "group-components", "set-threads"):
        assert slurm[key] == generic[key], f"profiles/slurm and profiles/cluster-generic differ in {key}"


@pytest.fixture(scope="module")
def slurm_env(tmp_path_factory) -> dict:
    """PATH with the stand-in SLURM commands first; their state in a fresh folder."""
    bin_dir = tmp_path_factory.mktemp("slurm-bin")
    for name in ("sbatch", "srun", "sacct", "squeue", "sacctmgr", "sinfo"):
        (bin_dir / name).symlink_to(STANDIN)
    return {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "SLURM_STANDIN_DIR": str(tmp_path_factory.mktemp("slurm-state")),
        "SLURM_STANDIN_ACCOUNT": "myproject",
    }


def sbatch_calls(env: dict) -> list[list[str]]:
    path = Path(env["SLURM_STANDIN_DIR"]) / "calls.jsonl"
    return [json.loads(line)["args"] for line in path.read_text().splitlines()] if path.exists() else []


def option(args: list[str], name: str) -> str | None:
    """`--name value` or `--name=value` in an sbatch argument list."""
    for i, arg in enumerate(args):
        if arg == name:
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def target_jobs(args: list[str], full: bool = False) -> list[str]:
    """The rule names (`full`: rule:wildcards) of the jobs a submission runs (--target-jobs of its command)."""
    words = shlex.split(option(args, "--wrap"))
    jobs = []
    for word in words[words.index("--target-jobs") + 1 :]:
        if word.startswith("-"):
            break
        jobs.append(word if full else word.split(":", 1)[0])
    return jobs


@pytest.fixture(scope="module")
def slurm_run(tmp_path_factory, ffpp_tree, slurm_env, code):
    """The tiny workflow's data path run through the SLURM executor plugin and the stand-ins."""
    work = tmp_path_factory.mktemp("slurm-work")
    config = tiny_config(ffpp_tree)
    run(work, config, *SLURM, "data", env=slurm_env, code=code)
    return work, config


def test_slurm_runs_the_data_path_in_a_few_grouped_jobs(slurm_run, slurm_env, code):
    work, config = slurm_run
    for q in config["compress"]["qualities"]:
        assert (work / f"data/shards/q{q}/index.json").is_file()
    assert (work / "results/fidelity/psnr_ssim.csv").is_file()
    calls = sbatch_calls(slurm_env)
    comments = [option(c, "--comment") for c in calls]
    # 28 jobs (source, manifest, 4 faces, 8 compress, 4 quality, 6 shards, 2 indexes, 2 summaries): 4 submissions.
    assert len(calls) == 4, comments
    assert comments[:2] == ["rule_source", "rule_manifest"]
    batches = next(c for c in calls if option(c, "--comment").startswith("rule_batches"))
    jobs = target_jobs(batches)
    assert jobs.count("faces") == 4 and jobs.count("compress") == 8, jobs
    # One allocation for the group: CPUs up to --cores, memory of the jobs that run side by side, runtimes of
    # the jobs that run one after another (faces then compress, from set-resources).
    assert option(batches, "-p") == "cpu" and option(batches, "-A") == "myproject"
    assert option(batches, "--cpus-per-task") == "2" and option(batches, "--ntasks") == "1"
    assert int(option(batches, "-t")) >= 60 + 20 and int(option(batches, "--mem")) >= 3000
    collect = next(c for c in calls if option(c, "--comment").startswith("rule_collect"))
    assert {"fidelity", "fidelity_report", "face_summary", "shards_train", "shard_index"} <= set(target_jobs(collect))
    source = calls[0]
    assert option(source, "-t") == "720" and option(source, "--mem") == "2000"
    assert planned(run(work, config, *SLURM, "-n", "data", env=slurm_env, code=code)) == {}


def test_slurm_renders_a_training_job_with_its_gpu(slurm_run, slurm_env, code, tmp_path):
    """A site's edit (gpu_model uncommented) and the rule's GPU count reach sbatch as --gpus=<model>:<n>; each
    model is trained and scored in one GPU job."""
    work, config = slurm_run
    profile = tmp_path / "slurm"
    shutil.copytree(REPO / "profiles/slurm", profile)
    text = (profile / "config.yaml").read_text()
    site = re.sub(r"# gpu_model: \"a100\"", 'gpu_model: "a100"', text)
    assert site.count('\n    gpu_model: "a100"') == 3, "profiles/slurm: the commented gpu_model lines moved"
    (profile / "config.yaml").write_text(site)
    args = ["--profile", str(profile), *SLURM[2:]]
    env = {**slurm_env, "SLURM_STANDIN_REFUSE": "rule_model"}  # record the job, do not run it
    before = len(sbatch_calls(env))
    proc = run(work, {**config, **TRAIN}, *args, "tables", env=env, code=code, check=False)
    assert proc.returncode != 0
    models = [c for c in sbatch_calls(env)[before:] if option(c, "--comment").startswith("rule_model")]
    assert models, (proc.stdout + proc.stderr)[-3000:]
    # The model trained on all methods (the other, Deepfakes only, is for the generalization matrix).
    calls = [c for c in models if any(j.startswith("train:") and j.endswith("=all") for j in target_jobs(c, full=True))]
    assert sorted(target_jobs(calls[0])) == ["predict", "train"]
    job = calls[0]
    assert option(job, "--gpus") == "a100:1" and option(job, "-p") == "gpu"
    assert option(job, "--cpus-per-gpu") == "8" and option(job, "--cpus-per-task") is None
    assert option(job, "--mem") == "64000" and option(job, "-t") == str(480 + 120)  # train then predict
    # retries: 1 resubmits a failed job once, the training runtime scaled by the attempt.
    assert len(calls) == 2 and option(calls[1], "-t") == str(960 + 120)


def test_cluster_generic_runs_the_whole_workflow_through_its_submit_command(tmp_path, ffpp_tree, code):
    """Data path, training, scoring and tables, every job through profiles/cluster-generic/submit-local.sh."""
    work = tmp_path / "work"
    work.mkdir()
    submitted = tmp_path / "submitted.jsonl"
    env = {**os.environ, "CLUSTER_SUBMIT_LOG": str(submitted)}
    config = {**tiny_config(ffpp_tree), **TRAIN}
    run(work, config, *GENERIC, "tables", env=env, code=code)
    assert (work / "results/auc_table.csv").is_file() and (work / "data/models/meso4/q77-all/best.pt").is_file()
    jobs = [json.loads(line) for line in submitted.read_text().splitlines()]
    kinds = [j.get("groupid") or j.get("rule") for j in jobs]
    # Two models (all methods; Deepfakes only, for the generalization matrix), each trained and scored in one job.
    assert kinds == ["source", "manifest", "batches", "collect", "model", "model", "tables"], kinds
    batches, model = jobs[2], jobs[4]
    assert batches["type"] == "group" and batches["resources"]["runtime"] >= 60 + 20
    assert model["resources"]["gpu"] == 1 and model["resources"]["mem_mb"] == 64000
    assert list((work / ".snakemake/cluster-generic-logs").glob("*.log"))
    assert planned(run(work, config, *GENERIC, "-n", "tables", env=env, code=code)) == {}


def test_conda_environment_names_files_that_exist():
    """envs/pipeline.yaml (untested with conda here) must at least point at the real pip files and script."""
    env = yaml.safe_load((REPO / "envs/pipeline.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    for entry in pip:
        flag, name = entry.split()
        assert flag in ("-r", "-c") and (REPO / "envs" / name).is_file(), entry
    deploy = REPO / "envs/pipeline.post-deploy.sh"
    assert os.access(deploy, os.X_OK)
    subprocess.run(["bash", "-n", str(deploy)], check=True)
    for name in re.findall(r'"\$here/([^"]+)"', deploy.read_text()):
        assert (REPO / "envs" / name).exists(), name
