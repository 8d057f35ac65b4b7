"""Test-time perturbations of a face crop: resize (down and back up), Gaussian blur, Gaussian noise.

They act on the lossless crop and their result is kept lossless (PNG), so each level measures one
perturbation and nothing else. Noise is drawn from a generator seeded by the crop's name, so a rerun, or
another machine, perturbs every crop identically.
"""

from __future__ import annotations

import hashlib

import cv2
import numpy as np


def resize(rgb: np.ndarray, scale: float) -> np.ndarray:
    """Down to `scale` of the side (area averaging, as an image pipeline shrinks) and back up (bicubic)."""
    if not 0 < scale <= 1:
        raise ValueError(f"resize scale {scale} is outside (0, 1]")
    h, w = rgb.shape[:2]
    small = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def blur(rgb: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of standard deviation `sigma` pixels (kernel ±3 sigma)."""
    if sigma <= 0:
        raise ValueError(f"blur sigma {sigma} must be > 0")
    return cv2.GaussianBlur(rgb, (0, 0), sigmaX=float(sigma), sigmaY=float(sigma), borderType=cv2.BORDER_REFLECT_101)


def noise(rgb: np.ndarray, sigma: float, seed_name: str) -> np.ndarray:
    """Additive Gaussian noise of standard deviation `sigma` (8-bit units), clipped to [0, 255]."""
    if sigma <= 0:
        raise ValueError(f"noise sigma {sigma} must be > 0")
    seed = int.from_bytes(hashlib.sha256(seed_name.encode()).digest()[:8], "big")
    drawn = np.random.default_rng(seed).normal(0.0, float(sigma), rgb.shape)
    return np.clip(np.rint(rgb.astype(np.float64) + drawn), 0, 255).astype(np.uint8)


def apply(rgb: np.ndarray, kind: str, level: float, name: str) -> np.ndarray:
    """`rgb` under perturbation `kind` at `level`; `name` (the crop's) seeds the noise."""
    if kind == "resize":
        return resize(rgb, level)
    if kind == "blur":
        return blur(rgb, level)
    if kind == "noise":
        return noise(rgb, level, name)
    raise ValueError(f"unknown perturbation {kind!r}; known: resize, blur, noise")
