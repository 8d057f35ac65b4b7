"""Trainer under DDP: 2 CPU processes (gloo) launched by torchrun, each with batch size B, end with the same
weights and validation AUCs as 1 process with batch size 2B.

Why they should: batches go round-robin to ranks, so step k of rank r trains on global batch 2k + r, and
both ranks together see exactly the 2B samples (same augmentations, seeded by their place in the epoch) that
the single process sees at step k; DDP averages the ranks' gradients, which is the gradient of the mean loss
over those 2B samples. The model here has no BatchNorm (its batch statistics would be per rank) and no
dropout (both ranks seed their RNG alike, so the two halves would get correlated masks, unlike one batch).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_loader import make_shards, videos

SCRIPT = '''
import json, sys
from pathlib import Path

import torch
from torch import nn

from dfpipe.models.train import train


class Tiny(nn.Module):
    """No BatchNorm, no dropout: a DDP step over 2 ranks is then the step of their joint batch."""

    name = "tiny-ddp"
    input_size = 16
    mean = (0.5, 0.5, 0.5)
    std = (0.5, 0.5, 0.5)

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(4, 1)

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3))).squeeze(1)

    def loss(self, logits, labels):
        return {"loss": nn.functional.binary_cross_entropy_with_logits(logits, labels)
                + 1e-3 * self.head.weight.square().sum()}


args = json.loads(sys.argv[1])
torch.manual_seed(0)
model = Tiny()
out = Path(args["out"])
out.mkdir(parents=True, exist_ok=True)
torch.save(model.state_dict(), out / f"initial-{args['tag']}.pt")
train(model, [Path(p) for p in args["train"]], [Path(p) for p in args["val"]], out, args["settings"],
      device="cpu")
'''

B = 2  # per rank; the single process gets 2 * B
SETTINGS = {
    "epochs": 2,
    "lr": 0.01,
    "seed": 7,
    "num_workers": 0,
    "max_steps_per_epoch": None,
    "checkpoint_every": 100,
    "augment": {"hflip": 0.5},
}
TIMEOUT = 120


def run(cmd: list[str], out: Path, tag: str, shards: tuple[list[Path], list[Path]], batch_size: int) -> dict:
    args = {
        "out": str(out),
        "tag": tag,
        "train": [str(p) for p in shards[0]],
        "val": [str(p) for p in shards[1]],
        "settings": {**SETTINGS, "batch_size": batch_size},
    }
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    }
    env["OMP_NUM_THREADS"] = "1"
    with subprocess.Popen([*cmd, json.dumps(args)], env=env) as proc:
        try:
            rc = proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            # torchrun's workers run in sessions of their own: SIGTERM lets torchrun stop them, SIGKILL would
            # orphan them (blocked in gloo, holding the test's stdout)
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
    assert rc == 0, f"{' '.join(cmd)} exited with {rc}"
    return json.loads((out / "summary.json").read_text())


def test_two_ddp_ranks_equal_one_process_with_twice_the_batch(tmp_path) -> None:
    root = tmp_path / "shards"
    shards = (
        make_shards(root, "train", videos(3, 3)),  # 9 real, 9 fake: 16 samples per epoch in batches of 2 or 4
        make_shards(root, "val", videos(2, 2, offset=100), frames=2, n_shards=1, first=100),
    )
    script = tmp_path / "train_tiny.py"
    script.write_text(SCRIPT)
    ddp_dir, single_dir = tmp_path / "ddp", tmp_path / "single"
    ddp = run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)],
        ddp_dir,
        "ddp",
        shards,
        B,
    )
    single = run([sys.executable, str(script)], single_dir, "single", shards, 2 * B)

    assert (ddp["world_size"], single["world_size"]) == (2, 1)
    assert ddp["steps_per_epoch"] == single["steps_per_epoch"] == 4  # 2 × 9 samples // 4 per (joint) batch
    assert ddp["steps"] == single["steps"] == 8
    assert ddp["settings"]["batch_size"] == B and single["settings"]["batch_size"] == 2 * B

    initial = torch.load(single_dir / "initial-single.pt")
    assert all(torch.equal(initial[k], v) for k, v in torch.load(ddp_dir / "initial-ddp.pt").items())
    ours, theirs = (torch.load(d / "last.pt", weights_only=False) for d in (ddp_dir, single_dir))
    assert ours["model"].keys() == theirs["model"].keys() == initial.keys()
    for key, value in theirs["model"].items():
        assert not torch.allclose(value, initial[key], atol=1e-4), f"{key}: training did not change it"
        torch.testing.assert_close(ours["model"][key], value, atol=1e-6, rtol=1e-5, msg=key)
    assert (ours["epoch"], ours["position"], ours["step"]) == (theirs["epoch"], theirs["position"], theirs["step"])

    assert len(ddp["val_auc"]) == len(single["val_auc"]) == 2
    assert ddp["val_auc"] == pytest.approx(single["val_auc"], abs=1e-6)
    assert ddp["best_epoch"] == single["best_epoch"]
    # rank 0 logs its own half-batch loss, so only the step numbers and learning rates must agree
    logs = [[json.loads(ln) for ln in (d / "train_log.jsonl").read_text().splitlines()] for d in (ddp_dir, single_dir)]
    assert [r["step"] for r in logs[0]] == [r["step"] for r in logs[1]] == list(range(1, 9))
    assert [r["lr"] for r in logs[0]] == [r["lr"] for r in logs[1]]
