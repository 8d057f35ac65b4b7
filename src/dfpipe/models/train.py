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

A resume point is bound to what it was trained on: a fingerprint of the shards (every member's name, size
and place, and every label), of the settings and of the detector. When any differs (shards rebuilt after an
upstream change, new settings) the run starts afresh and says so; a finished run whose fingerprint matches
only makes sure `best.pt` is there. Checkpoints hold tensors and plain Python values only and are loaded
with `weights_only=True`: a file that would need to run code to load is refused.

The loop is split as in timm: `train_one_epoch`, `validate`, a `CheckpointSaver` (last/best, atomic writes,
fingerprint checks) and `create_optimizer` / `create_scheduler`. On CPU, when the decoded crops of both splits
fit in `decoded_cache_mb`, each crop is decoded once and kept in memory instead of by loader workers every
epoch (the same batches: augmentation runs on a copy). When enabled: channels_last (CUDA and CPU)
and, on CUDA, AMP (float16 autocast + GradScaler). Under torchrun with more than one process, DDP (one GPU
per process, each rank its own batches, rank 0 validates and writes).
"""

from __future__ import annotations

import hashlib
import json
import logging
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
from sklearn.metrics import roc_auc_score
from torch import nn
from tqdm import tqdm

from dfpipe.config import schema_defaults
from dfpipe.data.loader import Augment, ShardStream, make_loader, normalize
from dfpipe.evaluation.metrics import choose_threshold, video_scores, video_weights
from dfpipe.evaluation.predict import eval_stream, pick_device, score
from dfpipe.io import atomic_path, write_json
from dfpipe.models.experiments import SETTING_KEYS
from dfpipe.models.modelfile import ModelFileError, detector_name, read_model_file, write_model_file
from dfpipe.models.weights import load_plain

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
# Settings that change nothing in the result, so a resumed run may differ in them.
FREE = {"num_workers", "cudnn_benchmark", "decoded_cache_mb"}
# Progress of a run, stored at the top level of last.pt.
STATE_KEYS = ("epoch", "position", "step", "best_val_auc", "best_epoch", "val_auc")


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


# -- RNG states as tensors and plain values (what weights_only=True loads) -----------------------------------
def rng_state() -> dict[str, Any]:
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": {"version": version, "state": list(mt), "gauss": gauss},
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict[str, Any]) -> None:
    py, npy = state["python"], state["numpy"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    np.random.set_state(
        (npy["name"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"], npy["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


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


# -- what a run is bound to ----------------------------------------------------------------------------------
def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def data_fingerprint(*streams: ShardStream) -> str:
    """Hash of the samples the streams read: per shard its `q<Q>/<name>` and size, per sample its key, label
    and the place and size of its members. A rebuilt shard whose crops changed changes it; moving the output
    root does not."""
    h = hashlib.sha256()
    for stream in streams:
        for shard in stream.shards:
            p = Path(shard)
            h.update(f"{p.parent.name}/{p.name}:{p.stat().st_size};".encode())
        for e in stream.entries:
            h.update(f"{e.shard},{e.key},{e.label},{e.jpg},{e.json};".encode())
    return h.hexdigest()


def detector_fingerprint(detector: nn.Module, spec: dict[str, Any] | None) -> str:
    """Hash of the detector's spec (when given), name, input settings and parameter names and shapes."""
    shapes = [(k, list(v.shape)) for k, v in detector.state_dict().items()]
    return _digest(
        {
            "spec": spec,
            "name": detector_name(detector),
            "input_size": detector.input_size,
            "mean": list(detector.mean),
            "std": list(detector.std),
            "shapes": shapes,
        }
    )


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint of tensors and plain values; anything that would run code to load is refused."""
    fix = "delete it to train afresh"
    ckpt = load_plain(path, str(path), "checkpoint", fix, f"{fix}, and never load files of unknown origin")
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise ValueError(f"{path}: not a dfpipe checkpoint (no model); delete it to train afresh")
    return ckpt


class CheckpointSaver:
    """Owns `last.pt` and `best.pt` in `out_dir`: atomic writes (rank 0 only), the fingerprint a resume point
    must match, the best epoch's weights (kept in last.pt too, so a finished run can always give best.pt).
    best.pt is the deployable model file, written by `dfpipe.models.modelfile` as predict and export read it."""

    def __init__(
        self,
        out_dir: Path,
        fingerprint: dict[str, str],
        settings: dict[str, Any],
        detector: nn.Module,
        is_main: bool,
        spec: dict[str, Any] | None = None,
    ) -> None:
        self.last, self.best = out_dir / "last.pt", out_dir / "best.pt"
        self.spec = spec  # saved in best.pt: predict and export rebuild the model (and its ELA) from it alone
        self.fingerprint, self.settings, self.detector = fingerprint, settings, detector
        self.is_main = is_main
        self.best_model: dict[str, torch.Tensor] | None = None
        self.best_meta: dict[str, Any] | None = None

    def resume_point(self) -> dict[str, Any] | None:
        """last.pt when it matches this run; None (after saying why, and removing a stale best.pt) when it does
        not or there is none."""
        if not self.last.exists():
            return None
        ckpt = load_checkpoint(self.last)
        theirs = ckpt.get("fingerprint") or {}
        differ = [k for k in self.fingerprint if theirs.get(k) != self.fingerprint[k]]
        if differ:
            if self.is_main:
                what = {"data": "other shards", "settings": "other settings", "detector": "another detector spec"}
                logger.info(
                    f"{self.last}: trained on {', '.join(what[k] for k in differ)} than this run: starting "
                    f"afresh (the old resume point is replaced at the first checkpoint)"
                )
                self.best.unlink(missing_ok=True)
            return None
        self.best_model, self.best_meta = ckpt.get("best_model"), ckpt.get("best_meta")
        return ckpt

    def save_last(
        self,
        state: dict[str, Any],
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        scaler: torch.amp.GradScaler,
    ) -> None:
        if self.is_main:
            self._save(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    "rng": rng_state(),
                    "settings": self.settings,
                    "detector": detector_name(self.detector),
                    "fingerprint": self.fingerprint,
                    "best_model": self.best_model,
                    "best_meta": self.best_meta,
                    **state,
                },
                self.last,
            )

    def update_best(
        self, state: dict[str, Any], auc: float, epoch: int, model: nn.Module, threshold: float | None = None
    ) -> None:
        """Record epoch `epoch`'s validation AUC; keep and write its weights (and the `threshold` chosen on its
        validation scores) when it beats every earlier one (the earliest of equal epochs stays)."""
        state["val_auc"] = [*state["val_auc"][: epoch - 1], auc]
        if state["best_val_auc"] is not None and auc <= state["best_val_auc"]:
            return
        state["best_val_auc"], state["best_epoch"] = auc, epoch
        self.best_model = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        self.best_meta = {"epoch": epoch, "val_auc": auc}
        if threshold is not None:  # predict and export decide at it, wherever the file is copied
            self.best_meta["threshold"] = threshold
        self._write_best()

    def ensure_best(self) -> None:
        """A finished run's best.pt: written again when missing or not of this run (e.g. removed by Snakemake
        before a rerun whose shards came out identical)."""
        if not self.is_main or self.best_model is None:
            return
        if self.best.exists():
            try:
                if read_model_file(self.best).get("fingerprint") == self.fingerprint:
                    return
            except ModelFileError:
                pass
        logger.info(f"{self.best}: written from the finished run's {self.last}")
        self._write_best()

    def _write_best(self) -> None:
        if self.is_main and self.best_model is not None and self.best_meta is not None:
            meta = dict(self.best_meta)
            threshold = meta.pop("threshold", None)
            write_model_file(
                self.best,
                self.detector,
                self.spec,
                threshold,
                weights=self.best_model,
                run={"settings": self.settings, "fingerprint": self.fingerprint},
                **meta,
            )

    @staticmethod
    def _save(obj: dict[str, Any], path: Path) -> None:
        with atomic_path(path) as tmp:
            torch.save(obj, tmp)


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
    state: dict[str, Any] = {
        "epoch": 0,
        "position": 0,
        "step": 0,
        "best_val_auc": None,
        "best_epoch": None,
        "val_auc": [],
    }
    kept = {k: v for k, v in s.items() if k not in FREE}
    fingerprint = {
        "data": data_fingerprint(stream, val_stream),
        "settings": _digest(kept),
        "detector": detector_fingerprint(detector, spec),
    }
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
    ckpt = saver.resume_point()
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"])
        state = {k: ckpt[k] for k in STATE_KEYS}
        if is_main:
            logger.info(
                f"{saver.last}: resuming at epoch {state['epoch'] + 1}, batch {state['position']}, step {state['step']}"
            )

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
