"""Train a detector on the shards with exact kill-and-resume, and select it by validation AUC.

A run writes into `out_dir`: `last.pt` (everything needed to continue: model, optimizer, scheduler, grad
scaler, RNG states, epoch, position in the epoch, step, validation history, the best epoch's weights),
`best.pt` (the model of the epoch with the best validation AUC, every video weighing the same as in the tables,
earliest on ties, with the decision threshold chosen on that epoch's validation scores: video level, Youden's J
as in the tables), `train_log.jsonl` (one line per step) and `summary.json`. Restarted with the same settings
after a kill at any point, it continues from `last.pt` and ends with the same weights as an uninterrupted run:
the loader reproduces the rest of the epoch exactly (see `dfpipe.data.loader`), the RNG states are restored, and
the LR schedule is stepped per iteration. Exact equality holds where the kernels are deterministic (CPU; on
CUDA set `deterministic: true`).

A resume point is bound to what it was trained on (the shards, the settings, the detector): when any differs,
the run starts afresh and says so (`dfpipe.models.checkpoint`, which writes and reads last.pt and best.pt).

The loop is split as in timm: `train_one_epoch`, `validate`, a `CheckpointSaver` (last/best, atomic writes,
fingerprint checks) and `create_optimizer` / `create_scheduler`. `train_job` runs a job the workflow describes
(`dfpipe.models.experiments` builds its detector), `launch` runs it here or under torchrun. On CPU, when the decoded crops of both splits
fit in `decoded_cache_mb`, each crop is decoded once and kept in memory instead of by loader workers every
epoch (the same batches: augmentation runs on a copy). When enabled: channels_last (CUDA and CPU)
and, on CUDA, AMP (float16 autocast + GradScaler). Under torchrun with more than one process, DDP (one GPU
per process, each rank its own batches, rank 0 validates and writes).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from sklearn.metrics import roc_auc_score
from torch import nn
from tqdm import tqdm

from dfpipe.config import schema_defaults
from dfpipe.data.loader import Augment, ShardStream, make_loader, normalize
from dfpipe.evaluation.metrics import choose_threshold, video_scores, video_weights
from dfpipe.evaluation.predict import eval_stream, pick_device, score
from dfpipe.io import atomic_path, write_json
from dfpipe.models.checkpoint import CheckpointSaver, run_fingerprint
from dfpipe.models.experiments import ALL, SETTING_KEYS, build_detector
from dfpipe.models.modelfile import detector_name

logger = logging.getLogger(__name__)

# The config's training settings take their defaults from config.schema.yaml's train section (DeepfakeBench's
# EfficientNet-B4 recipe: Adam lr 2e-4, wd 5e-4, 10 epochs, seed 1024); the settings below them are set per job
# by the workflow (dfpipe.models.experiments), never in the config.
_TRAIN_DEFAULTS = schema_defaults("train")
DEFAULTS: dict[str, Any] = {
    **{key: _TRAIN_DEFAULTS[key] for key in SETTING_KEYS},
    "num_workers": None,  # None: min(4, CPUs this process may use) loader workers
    "methods": None,  # train and validate on these methods only (e.g. ["original", "Deepfakes"]); None: all
    "frames_per_method": None,  # {method: n}: train on n frames per video of that method (val/test keep all)
    "cudnn_benchmark": None,  # None: unless deterministic (autotuning costs the first steps, pays off in long runs)
    "decoded_cache_mb": 1024,  # on CPU: keep both splits' decoded crops in memory when they fit in this many MiB
}
OPTIMIZERS = ("adam", "sgd")
SCHEDULERS = ("cosine", "step", "constant")


def resolve_settings(settings: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(settings) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"training settings: unknown keys {unknown}; known: {sorted(DEFAULTS)}")
    s = {**DEFAULTS, **settings}
    if s["num_workers"] is None:  # more workers than cores only contend (the demo machines have 2)
        s["num_workers"] = min(4, len(os.sched_getaffinity(0)))
    if s["optimizer"] not in OPTIMIZERS:
        raise ValueError(f"training settings: optimizer {s['optimizer']!r}; use one of {list(OPTIMIZERS)}")
    if s["scheduler"] not in SCHEDULERS:
        raise ValueError(f"training settings: scheduler {s['scheduler']!r}; use one of {list(SCHEDULERS)}")
    if s["checkpoint_every"] < 1 or s["epochs"] < 1:
        raise ValueError("training settings: checkpoint_every and epochs must be >= 1")
    Augment.from_dict(s["augment"])  # fail on bad augment keys now, not in a worker
    return s


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# -- optimizer and scheduler factory -------------------------------------------------------------------------
def create_optimizer(model: nn.Module, s: dict[str, Any]) -> torch.optim.Optimizer:
    if s["optimizer"] == "sgd":
        return torch.optim.SGD(model.parameters(), lr=s["lr"], momentum=s["momentum"], weight_decay=s["weight_decay"])
    return torch.optim.Adam(model.parameters(), lr=s["lr"], weight_decay=s["weight_decay"])


def create_scheduler(
    optimizer: torch.optim.Optimizer, s: dict[str, Any], steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """Stepped once per iteration (a resumed run continues mid-epoch on the same curve)."""
    if s["scheduler"] == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, s["step_epochs"] * steps_per_epoch, s["step_gamma"])
    if s["scheduler"] == "constant":  # DeepfakeBench's detector configs (lr_scheduler: null)
        return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=s["epochs"] * steps_per_epoch)


class StepLog:
    """train_log.jsonl, appended line by line; on resume cut back to the steps the checkpoint holds."""

    def __init__(self, path: Path, resume_step: int, enabled: bool) -> None:
        self.path, self.enabled = path, enabled
        if enabled and path.exists():
            kept = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln)["step"] <= resume_step]
            with atomic_path(path) as tmp:
                tmp.write_text("".join(ln + "\n" for ln in kept))
        self.file = open(path, "a") if enabled else None

    def write(self, record: dict[str, Any]) -> None:
        if self.file:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()

    def close(self) -> None:
        if self.file:
            self.file.close()


def validation_metrics(scores: pd.DataFrame) -> tuple[float, float]:
    """(AUC, decision threshold) of validation frame scores (`score`'s columns), weighed as the
    tables weigh them (`dfpipe.evaluation.metrics`): the frame-level AUC gives every video weight 1 (each frame
    1 / its video's frame count), so a video or method with more frames (NeuralTextures' doubled frame rate)
    sways the choice of the best epoch no more than any other; the threshold is Youden's J on video mean scores,
    one row per video and so every video weighing 1 there too."""
    if scores["label"].nunique() < 2:
        raise ValueError("validation scores hold one label only, AUC is undefined")
    weights = video_weights(scores["video_key"].to_numpy())
    auc = roc_auc_score(scores["label"], scores["score"], sample_weight=weights)
    videos = video_scores(scores)
    threshold = choose_threshold(videos["label"].to_numpy(), videos["score"].to_numpy())
    return float(auc), threshold


def validate(
    detector: nn.Module, stream: ShardStream, device: torch.device, num_workers: int, amp: bool
) -> tuple[float, float]:
    """`validation_metrics` of `detector` on an evaluation stream (the validation shards)."""
    scores = score(detector, stream, device, num_workers=num_workers, amp=amp)
    if scores["label"].nunique() < 2:
        raise ValueError(f"validation shards hold one label only, AUC is undefined: {', '.join(stream.shards)}")
    return validation_metrics(scores)


def train_one_epoch(
    epoch: int,
    model: nn.Module,
    detector: nn.Module,
    loader: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    state: dict[str, Any],
    checkpoint: Callable[[], None],
    step_log: StepLog,
    on_step: Callable[[dict[str, Any]], Any],
    s: dict[str, Any],
    device: torch.device,
    steps_per_epoch: int,
    world: int = 1,
    is_main: bool = True,
    startup: dict[str, float] | None = None,
) -> None:
    """The rest of epoch `epoch` (from `state["position"]`): one step per batch, a checkpoint every
    `checkpoint_every` steps. `model` is what runs forward (DDP-wrapped or not); `detector` gives the loss.
    `startup` ({"start": perf_counter at the job's start}) gets the seconds to this process's first batch
    and first finished step."""
    amp, channels_last = s["amp"] and device.type == "cuda", s["channels_last"]
    model.train()
    bar = tqdm(
        total=steps_per_epoch,
        initial=state["position"],
        desc=f"epoch {epoch + 1}/{s['epochs']}",
        file=sys.stderr,
        disable=not is_main,
        leave=False,
        dynamic_ncols=True,
    )
    # Step records whose loss is still a device tensor. Reading a loss waits for its step to finish, so it is
    # read one step late: the GPU runs step n while the CPU loads and queues step n + 1. Every record is
    # logged (and checked finite) before a checkpoint covers its step.
    pending: list[tuple[dict[str, Any], torch.Tensor]] = []

    def log_steps(keep: int) -> None:
        done, pending[:] = pending[: len(pending) - keep], pending[len(pending) - keep :]
        for record, loss in done:
            record["loss"] = loss.item()
            if not np.isfinite(record["loss"]):
                raise FloatingPointError(f"{step_log.path.parent}: loss is {record['loss']} at step {record['step']}")
            step_log.write(record)
            bar.set_postfix(loss=f"{record['loss']:.4f}")
            on_step(record)

    tick = time.perf_counter()
    try:
        for images, labels in loader if state["position"] < steps_per_epoch else ():
            if startup is not None and "first_batch" not in startup:
                startup["first_batch"] = time.perf_counter() - startup["start"]
            images = normalize(images.to(device, non_blocking=True), detector.mean, detector.std)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            labels = labels.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                loss = detector.loss(model(images), labels)["loss"]
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            if startup is not None and "first_step" not in startup:
                if device.type == "cuda":  # once: the time the first step is done, not queued
                    torch.cuda.synchronize(device)
                startup["first_step"] = time.perf_counter() - startup["start"]
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            state["step"] += 1
            state["position"] += 1
            now = time.perf_counter()
            pending.append(
                (
                    {
                        "step": state["step"],
                        "epoch": epoch + 1,
                        "loss": None,
                        "lr": lr,
                        "images_per_s": len(labels) * world / (now - tick),
                    },
                    loss.detach(),
                )
            )
            tick = now
            bar.update()
            at_checkpoint = state["step"] % s["checkpoint_every"] == 0
            log_steps(keep=0 if at_checkpoint else 1)
            if at_checkpoint:
                checkpoint()
        log_steps(keep=0)
    finally:
        bar.close()


def set_up_device(device: str, s: dict[str, Any], world: int) -> torch.device:
    """This process's device (its rank's GPU under torchrun), the process group, and the kernel choices."""
    dev = pick_device(device, int(os.environ.get("LOCAL_RANK", "0")))
    cuda = dev.type == "cuda"
    if world > 1:
        if cuda:
            torch.cuda.set_device(dev)
        dist.init_process_group("nccl" if cuda else "gloo")
    deterministic = s["deterministic"] if s["deterministic"] is not None else not cuda
    if deterministic and cuda:  # cuBLAS is deterministic only with a fixed workspace (read at its first use)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    # cuDNN autotuning tries every convolution algorithm at each new shape: faster steps, a slower first one
    benchmark = s["cudnn_benchmark"] if s["cudnn_benchmark"] is not None else not deterministic
    torch.backends.cudnn.benchmark = cuda and benchmark
    return dev


def train(
    detector: nn.Module,
    train_shards: Sequence[Path],
    val_shards: Sequence[Path],
    out_dir: Path,
    settings: dict[str, Any],
    device: str = "auto",
    on_step: Callable[[dict[str, Any]], Any] | None = None,
    spec: dict[str, Any] | None = None,
) -> Path:
    """Train `detector` (resuming from `out_dir/last.pt` when it belongs to this run) and return `best.pt`.

    `spec` (the detector's config entry) is part of what a resume point must match. `on_step` is called with
    each step's record as it is logged, before any checkpoint of that step (a hook for tests: raising there
    is a kill after the step, before its checkpoint).
    """
    startup = {"start": time.perf_counter()}
    s = resolve_settings(settings)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    on_step = on_step or (lambda record: None)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    dev = set_up_device(device, s, world)
    is_main, cuda = rank == 0, dev.type == "cuda"
    seed_everything(s["seed"])  # every rank alike: DDP broadcasts rank 0's weights anyway
    amp = s["amp"] and cuda

    model = detector.to(dev, memory_format=torch.channels_last) if s["channels_last"] else detector.to(dev)
    stream = ShardStream(
        train_shards,
        batch_size=s["batch_size"],
        input_size=detector.input_size,
        train=True,
        seed=s["seed"],
        augment=Augment.from_dict(s["augment"]),
        max_batches=s["max_steps_per_epoch"],
        methods=s["methods"],
        frames_per_method=s["frames_per_method"],
        rank=rank,
        world_size=world,
        ela=getattr(detector, "ela", None),
    )
    # every rank indexes the validation shards: they are part of the fingerprint; rank 0 alone validates
    val_stream = eval_stream(detector, val_shards, s["batch_size"], s["methods"])
    steps_per_epoch = len(stream)
    startup["index"] = time.perf_counter() - startup["start"]
    optimizer = create_optimizer(model, s)
    scheduler = create_scheduler(optimizer, s, steps_per_epoch)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    fingerprint = run_fingerprint((stream, val_stream), s, detector, spec)
    # On CPU the loader's decoding competes with the steps for the same cores, and every epoch decoded the same
    # crops again: when both splits' crops fit in memory, each is decoded once and kept, without loader workers
    # (on the demo the Meso nets' 16-24 epochs took 24-33% less time, with the same weights). On CUDA, workers
    # decode beside the GPU instead.
    workers = s["num_workers"]
    cache_bytes = stream.decoded_bytes() + val_stream.decoded_bytes()
    cached = not cuda and cache_bytes <= s["decoded_cache_mb"] * 2**20
    if cached:
        stream.keep_decoded()
        val_stream.keep_decoded()
        workers = 0
    saver = CheckpointSaver(out_dir, fingerprint, s, detector, is_main, spec)
    state = saver.resume(model, optimizer, scheduler, scaler)
    if state is None:
        state = {"epoch": 0, "position": 0, "step": 0, "best_val_auc": None, "best_epoch": None, "val_auc": []}

    def checkpoint() -> None:
        saver.save_last(state, model, optimizer, scheduler, scaler)

    step_log = StepLog(out_dir / "train_log.jsonl", state["step"], is_main)
    ddp = nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if cuda else None) if world > 1 else model
    loader = make_loader(stream, workers, pin_memory=cuda)
    startup_logged = False
    try:
        while state["epoch"] < s["epochs"]:
            epoch = state["epoch"]
            stream.set_epoch(epoch, state["position"])
            train_one_epoch(
                epoch,
                ddp,
                detector,
                loader,
                optimizer,
                scheduler,
                scaler,
                state,
                checkpoint,
                step_log,
                on_step,
                s,
                dev,
                steps_per_epoch,
                world,
                is_main,
                startup,
            )
            if is_main and "first_step" in startup and not startup_logged:
                startup_logged = True
                loading = (
                    f"decoded crops kept in memory ({cache_bytes / 2**20:.1f} MiB)" if cached else f"{workers} workers"
                )
                logger.info(
                    f"start-up: shards indexed at {startup['index']:.1f} s, first batch at "
                    f"{startup['first_batch']:.1f} s, first step done at {startup['first_step']:.1f} s; "
                    f"loader: {loading}"
                )
            if is_main:
                auc, threshold = validate(model, val_stream, dev, workers, amp)
                saver.update_best(state, auc, epoch + 1, model, threshold)
                logger.info(
                    f"epoch {epoch + 1}/{s['epochs']}: val AUC {auc:.4f} "
                    f"(best {state['best_val_auc']:.4f}, epoch {state['best_epoch']})"
                )
            state["epoch"], state["position"] = epoch + 1, 0
            checkpoint()
            if world > 1:
                dist.barrier()
        saver.ensure_best()
    finally:
        step_log.close()
        if world > 1:
            dist.destroy_process_group()
    if is_main:
        write_json(
            out_dir / "summary.json",
            {
                "detector": detector_name(detector),
                "settings": s,
                "device": str(dev),
                "world_size": world,
                "train_samples_per_label": stream.counts,
                "steps_per_epoch": steps_per_epoch,
                "steps": state["step"],
                "val_auc": state["val_auc"],
                "best_epoch": state["best_epoch"],
                "best_val_auc": state["best_val_auc"],
                "startup_s": {k: round(v, 3) for k, v in startup.items() if k != "start"},
            },
        )
    return saver.best


def train_job(job: dict[str, Any]) -> Path:
    """Train the model a job describes (keys: spec, settings, methods, train, val, out_dir, device)."""
    settings = dict(job["settings"])
    if job["methods"] != ALL:
        settings["methods"] = ["original", job["methods"]]
    # Seeded before the model is built: its initial weights (a new head, or a model from scratch) are part of
    # the run, and must not depend on what the process drew before.
    seed_everything(resolve_settings(settings)["seed"])
    detector = build_detector(job["spec"])
    return train(
        detector,
        [Path(p) for p in job["train"]],
        [Path(p) for p in job["val"]],
        Path(job["out_dir"]),
        settings,
        device=job["device"],
        spec=job["spec"],
    )


def launch(job: dict[str, Any], gpus: int) -> Path:
    """Run `train_job` here, or under torchrun with one process per GPU (DDP) when gpus > 1."""
    if gpus <= 1:
        return train_job(job)
    out_dir = Path(job["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    job_file = out_dir / "job.json"
    job_file.write_text(json.dumps(job, indent=2))
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={gpus}",
        "-m",
        "dfpipe.models.train",
        "train",
        str(job_file),
    ]
    logger.info("launching: " + " ".join(cmd))
    subprocess.run(cmd, check=True, env=os.environ.copy())
    return out_dir / "best.pt"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dfpipe.models.train")
    parser.add_argument("command", choices=["train"])
    parser.add_argument("job", type=Path, help="job.json written by launch()")
    args = parser.parse_args(argv)
    # A torchrun worker has no job log of its own: its rank 0's lines go to stdout, as the launcher's do.
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    train_job(json.loads(args.job.read_text()))


if __name__ == "__main__":
    main()
