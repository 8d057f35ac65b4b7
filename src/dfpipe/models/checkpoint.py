"""A training run's checkpoints: `last.pt`, the resume point, and `best.pt`, the deployable model file.

A resume point is bound to what it was trained on: a fingerprint of the shards (every member's name, size
and place, and every label), of the settings and of the detector. When any differs (shards rebuilt after an
upstream change, new settings) the run starts afresh and says so; a finished run whose fingerprint matches
only makes sure `best.pt` is there. Checkpoints hold tensors and plain Python values only (the RNG states
too) and are loaded with `weights_only=True`: a file that would need to run code to load is refused.
`dfpipe.models.train` runs the loop these files resume.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dfpipe.data.loader import ShardStream
from dfpipe.io import atomic_path
from dfpipe.models.modelfile import ModelFileError, detector_name, read_model_file, write_model_file
from dfpipe.models.weights import load_plain

logger = logging.getLogger(__name__)

# Settings that change nothing in the result, so a resumed run may differ in them.
FREE = {"num_workers", "cudnn_benchmark", "decoded_cache_mb"}
# Progress of a run, stored at the top level of last.pt.
STATE_KEYS = ("epoch", "position", "step", "best_val_auc", "best_epoch", "val_auc")


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
            h.update(f"{e.shard},{e.key},{e.label},{e.image},{e.json};".encode())
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


def run_fingerprint(
    streams: Sequence[ShardStream], settings: dict[str, Any], detector: nn.Module, spec: dict[str, Any] | None
) -> dict[str, str]:
    """What a resume point (and best.pt) is bound to: the samples of `streams`, the settings that change the
    result (all but FREE) and the detector."""
    return {
        "data": data_fingerprint(*streams),
        "settings": _digest({k: v for k, v in settings.items() if k not in FREE}),
        "detector": detector_fingerprint(detector, spec),
    }


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

    def resume(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        scaler: torch.amp.GradScaler,
    ) -> dict[str, Any] | None:
        """Load `resume_point` into the model, optimizer, scheduler, grad scaler and RNGs and return the run's
        progress (STATE_KEYS); None when the run starts afresh."""
        ckpt = self.resume_point()
        if ckpt is None:
            return None
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"])
        state = {k: ckpt[k] for k in STATE_KEYS}
        if self.is_main:
            logger.info(
                f"{self.last}: resuming at epoch {state['epoch'] + 1}, batch {state['position']}, step {state['step']}"
            )
        return state

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
