"""Train a detector on the shards with exact kill-and-resume, select it by validation AUC, and predict.

A run writes into `out_dir`: `last.pt` (everything needed to continue: model, optimizer, scheduler, grad
scaler, RNG states, epoch, position in the epoch, step, validation history), `best.pt` (the model of the
epoch with the best validation AUC, earliest on ties), `train_log.jsonl` (one line per step) and
`summary.json`. Restarted with the same settings after a kill at any point, it continues from `last.pt` and
ends with the same weights as an uninterrupted run: the loader reproduces the rest of the epoch exactly (see
`dfpipe.loader`), the RNG states are restored, and the LR schedule is stepped per iteration. Exact equality
holds where the kernels are deterministic (CPU; on CUDA set `deterministic: true`, slower).

On CUDA: AMP (float16 autocast + GradScaler) and channels_last when enabled; under torchrun with more than
one process, DDP (one GPU per process, each rank its own batches, rank 0 validates and writes).
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torch import nn
from tqdm import tqdm

from .io import atomic_path, write_json
from .loader import Augment, ShardStream, make_loader, normalize

# DeepfakeBench's EfficientNet-B4 recipe (Adam lr 2e-4, wd 5e-4, 10 epochs, seed 1024); the rest is ours.
DEFAULTS: dict[str, Any] = {
    "epochs": 10,
    "batch_size": 32,
    "lr": 2e-4,
    "weight_decay": 5e-4,
    "optimizer": "adam",
    "scheduler": "cosine",  # or "step": multiply the LR by step_gamma every step_epochs epochs
    "step_epochs": 3,
    "step_gamma": 0.1,
    "seed": 1024,
    "checkpoint_every": 500,
    "augment": {},
    "amp": True,
    "channels_last": True,
    "num_workers": None,  # None: min(4, CPUs this process may use) loader workers
    "max_steps_per_epoch": None,
    "methods": None,  # train and validate on these methods only (e.g. ["original", "Deepfakes"]); None: all
    "deterministic": None,  # None: on CPU only (deterministic CUDA kernels are slower)
}
# Settings that change nothing in the result, so a resumed run may differ in them.
FREE = {"num_workers"}


def resolve_settings(settings: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(settings) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"training settings: unknown keys {unknown}; known: {sorted(DEFAULTS)}")
    s = {**DEFAULTS, **settings}
    if s["num_workers"] is None:  # more workers than cores only contend (the demo machines have 2)
        s["num_workers"] = min(4, len(os.sched_getaffinity(0)))
    if s["optimizer"] != "adam":
        raise ValueError(f"training settings: optimizer {s['optimizer']!r} not supported; use 'adam'")
    if s["scheduler"] not in ("cosine", "step"):
        raise ValueError(f"training settings: scheduler {s['scheduler']!r}; use 'cosine' or 'step'")
    if s["checkpoint_every"] < 1 or s["epochs"] < 1:
        raise ValueError("training settings: checkpoint_every and epochs must be >= 1")
    Augment.from_dict(s["augment"])  # fail on bad augment keys now, not in a worker
    return s


def pick_device(device: str, local_rank: int = 0) -> torch.device:
    if device == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_atomic(obj: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def detector_name(detector: nn.Module) -> str:
    return str(getattr(detector, "name", type(detector).__name__))


@torch.no_grad()
def predict(
    detector: nn.Module,
    shards: Sequence[Path],
    device: str | torch.device = "auto",
    batch_size: int = 64,
    features: bool = False,
    num_workers: int = 0,
    amp: bool = False,
    methods: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Scores (sigmoid of the logit) of every sample of `shards` in loader order, with its metadata.

    `methods` keeps only samples of those methods. With `features`, a `features` column holds each sample's feature vector (spatially averaged when the
    detector returns maps), e.g. for t-SNE.
    """
    dev = pick_device(device) if isinstance(device, str) else device
    stream = ShardStream(shards, batch_size=batch_size, input_size=detector.input_size, train=False, methods=methods)
    was_training = detector.training
    detector.eval()
    rows: list[pd.DataFrame] = []
    for images, labels, meta in make_loader(stream, num_workers, pin_memory=dev.type == "cuda"):
        images = normalize(images.to(dev, non_blocking=True), detector.mean, detector.std)
        with torch.autocast(dev.type, dtype=torch.float16, enabled=amp and dev.type == "cuda"):
            logits, feats = detector.logits_and_features(images) if features else (detector(images), None)
        part = pd.DataFrame({k: meta[k] for k in ("video_key", "method", "video_id", "frame_index")})
        part["label"] = labels.int().numpy()
        part["score"] = torch.sigmoid(logits.float()).cpu().numpy()
        if feats is not None:
            flat = feats.float().flatten(2).mean(2) if feats.ndim > 2 else feats.float()
            part["features"] = list(flat.cpu().numpy())
        rows.append(part)
    detector.train(was_training)
    return pd.concat(rows, ignore_index=True)


def val_auc(scores: pd.DataFrame, shards: Sequence[Path]) -> float:
    if scores["label"].nunique() < 2:
        raise ValueError(f"validation shards hold one label only, AUC is undefined: {', '.join(map(str, shards))}")
    return float(roc_auc_score(scores["label"], scores["score"]))


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


def train(
    detector: nn.Module,
    train_shards: Sequence[Path],
    val_shards: Sequence[Path],
    out_dir: Path,
    settings: dict[str, Any],
    device: str = "auto",
    log: Callable[[str], Any] = print,
    on_step: Callable[[dict[str, Any]], Any] | None = None,
) -> Path:
    """Train `detector` (resuming from `out_dir/last.pt` when present) and return the path of `best.pt`.

    `on_step` is called with each step's record as it is logged, before any checkpoint of that step (a hook
    for tests: raising there is a kill after the step, before its checkpoint).
    """
    s = resolve_settings(settings)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    on_step = on_step or (lambda record: None)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local_rank)
    if world > 1:
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    is_main = rank == 0
    cuda = dev.type == "cuda"
    deterministic = s["deterministic"] if s["deterministic"] is not None else not cuda
    if deterministic and cuda:  # cuBLAS is deterministic only with a fixed workspace (read at its first use)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.benchmark = cuda and not deterministic
    seed_everything(s["seed"])  # every rank alike: DDP broadcasts rank 0's weights anyway
    amp, channels_last = s["amp"] and cuda, s["channels_last"] and cuda

    model = detector.to(dev, memory_format=torch.channels_last) if channels_last else detector.to(dev)
    stream = ShardStream(
        train_shards, batch_size=s["batch_size"], input_size=detector.input_size, train=True, seed=s["seed"],
        augment=Augment.from_dict(s["augment"]), max_batches=s["max_steps_per_epoch"], methods=s["methods"],
        rank=rank, world_size=world,
    )
    steps_per_epoch = len(stream)
    optimizer = torch.optim.Adam(model.parameters(), lr=s["lr"], weight_decay=s["weight_decay"])
    if s["scheduler"] == "cosine":
        scheduler: torch.optim.lr_scheduler.LRScheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=s["epochs"] * steps_per_epoch)
    else:
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, s["step_epochs"] * steps_per_epoch, s["step_gamma"])
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    state: dict[str, Any] = {"epoch": 0, "position": 0, "step": 0, "best_val_auc": None, "best_epoch": None,
                             "val_auc": []}
    kept = {k: v for k, v in s.items() if k not in FREE}

    last, best = out_dir / "last.pt", out_dir / "best.pt"
    if last.exists():
        ckpt = torch.load(last, map_location="cpu", weights_only=False)  # RNG states must stay CPU tensors
        theirs = {k: v for k, v in ckpt["settings"].items() if k not in FREE}
        if theirs != kept or ckpt["detector"] != detector_name(detector):
            raise ValueError(f"{last}: written by another run ({ckpt['detector']}, {theirs}); "
                             f"remove {out_dir} or use another out_dir")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"])
        state = {k: ckpt[k] for k in state}
        if is_main:
            log(f"{last}: resuming at epoch {state['epoch'] + 1}, batch {state['position']}, step {state['step']}")

    def checkpoint() -> None:
        if is_main:
            save_atomic({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                         "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "rng": rng_state(),
                         "settings": s, "detector": detector_name(detector), **state}, last)

    step_log = StepLog(out_dir / "train_log.jsonl", state["step"], is_main)
    ddp = nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if cuda else None) if world > 1 else model
    loader = make_loader(stream, s["num_workers"], pin_memory=cuda)
    # Step records whose loss is still a device tensor. Reading a loss waits for its step to finish, so it is
    # read one step late: the GPU runs step n while the CPU loads and queues step n + 1. Every record is
    # logged (and checked finite) before a checkpoint covers its step.
    pending: list[tuple[dict[str, Any], torch.Tensor]] = []

    def log_steps(keep: int) -> None:
        done, pending[:] = pending[:len(pending) - keep], pending[len(pending) - keep:]
        for record, loss in done:
            record["loss"] = loss.item()
            if not np.isfinite(record["loss"]):
                raise FloatingPointError(f"{out_dir}: loss is {record['loss']} at step {record['step']}")
            step_log.write(record)
            bar.set_postfix(loss=f"{record['loss']:.4f}")
            on_step(record)

    try:
        while state["epoch"] < s["epochs"]:
            epoch = state["epoch"]
            stream.set_epoch(epoch, state["position"])
            model.train()
            bar = tqdm(total=steps_per_epoch, initial=state["position"], desc=f"epoch {epoch + 1}/{s['epochs']}",
                       file=sys.stderr, disable=not is_main, leave=False, dynamic_ncols=True)
            tick = time.perf_counter()
            for images, labels in (loader if state["position"] < steps_per_epoch else ()):
                images = normalize(images.to(dev, non_blocking=True), detector.mean, detector.std)
                if channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                labels = labels.to(dev, non_blocking=True)
                with torch.autocast(dev.type, dtype=torch.float16, enabled=amp):
                    logits = ddp(images)
                    loss = F.binary_cross_entropy_with_logits(logits.float(), labels) + detector.extra_loss()
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                lr = optimizer.param_groups[0]["lr"]
                scheduler.step()
                state["step"] += 1
                state["position"] += 1
                now = time.perf_counter()
                pending.append(({"step": state["step"], "epoch": epoch + 1, "loss": None, "lr": lr,
                                 "images_per_s": len(labels) * world / (now - tick)}, loss.detach()))
                tick = now
                bar.update()
                at_checkpoint = state["step"] % s["checkpoint_every"] == 0
                log_steps(keep=0 if at_checkpoint else 1)
                if at_checkpoint:
                    checkpoint()
            log_steps(keep=0)
            bar.close()
            if is_main:
                scores = predict(model, val_shards, dev, s["batch_size"], num_workers=s["num_workers"], amp=amp,
                                 methods=s["methods"])
                auc = val_auc(scores, val_shards)
                state["val_auc"] = [*state["val_auc"][:epoch], auc]
                if state["best_val_auc"] is None or auc > state["best_val_auc"]:
                    state["best_val_auc"], state["best_epoch"] = auc, epoch + 1
                    save_atomic({"model": model.state_dict(), "detector": detector_name(detector), "settings": s,
                                 "input_size": detector.input_size, "mean": detector.mean, "std": detector.std,
                                 "epoch": epoch + 1, "val_auc": auc}, best)
                log(f"epoch {epoch + 1}/{s['epochs']}: val AUC {auc:.4f} "
                    f"(best {state['best_val_auc']:.4f}, epoch {state['best_epoch']})")
            state["epoch"], state["position"] = epoch + 1, 0
            checkpoint()
            if world > 1:
                dist.barrier()
    finally:
        step_log.close()
        if world > 1:
            dist.destroy_process_group()
    if is_main:
        write_json(out_dir / "summary.json", {
            "detector": detector_name(detector), "settings": s, "device": str(dev), "world_size": world,
            "train_samples_per_label": stream.counts, "steps_per_epoch": steps_per_epoch, "steps": state["step"],
            "val_auc": state["val_auc"], "best_epoch": state["best_epoch"], "best_val_auc": state["best_val_auc"],
        })
    return best
