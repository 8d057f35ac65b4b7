"""Dimensionality reductions between the backbone features and the classifiers: none, PCA or a small MLP
autoencoder, each after standardising with the training features' statistics."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.decomposition import PCA
from torch import nn

from dfpipe.config import schema_defaults

# default arguments below are the config schema's (probes section), so a call outside the workflow scores alike
_DEFAULTS = schema_defaults("probes")
REDUCTIONS = ("none", "pca", "autoencoder")


class Reduction:
    """Standardise (train statistics), then reduce; fitted on the training features only."""

    def __init__(
        self, kind: str, components: int = _DEFAULTS["components"], seed: int = 0, epochs: int = _DEFAULTS["ae_epochs"]
    ) -> None:
        if kind not in REDUCTIONS:
            raise ValueError(f"reduction {kind!r}: allowed {list(REDUCTIONS)}")
        self.kind, self.components, self.seed, self.epochs = kind, components, seed, epochs

    def fit(self, x: np.ndarray) -> Reduction:
        self.mean = x.mean(0)
        std = x.std(0)
        # as StandardScaler: a feature (nearly) constant in training is centred, not blown up by a tiny std
        self.scale = np.where(std > 1e-6 * max(float(std.max()), 1e-12), std, 1.0)
        z = (x - self.mean) / self.scale
        k = max(1, min(self.components, z.shape[0] - 1, z.shape[1]))
        if self.kind == "pca":
            self.pca = PCA(n_components=k, random_state=self.seed).fit(z)
        elif self.kind == "autoencoder":
            self.encoder = _train_autoencoder(z.astype(np.float32), k, self.seed, self.epochs)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        z = ((x - self.mean) / self.scale).astype(np.float32)
        if self.kind == "pca":
            return self.pca.transform(z)
        if self.kind == "autoencoder":
            with torch.inference_mode():
                return self.encoder(torch.from_numpy(z)).numpy()
        return z


def _train_autoencoder(z: np.ndarray, k: int, seed: int, epochs: int, hidden: int = 256) -> nn.Module:
    """A small MLP autoencoder (d → hidden → k → hidden → d, MSE, Adam) on CPU; returns the encoder.
    Seeded without touching torch's global generator."""
    d = z.shape[1]
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, k))
        decoder = nn.Sequential(nn.Linear(k, hidden), nn.ReLU(), nn.Linear(hidden, d))
    model = nn.Sequential(encoder, decoder)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-5)
    data = torch.from_numpy(z)
    batch = min(64, len(data))
    threads = torch.get_num_threads()
    # Steps this small gain nothing from threads, and on a busy machine contended threads made them ~15x slower.
    torch.set_num_threads(1)
    try:
        for _ in range(epochs):
            for ix in torch.randperm(len(data), generator=gen).split(batch):
                loss = nn.functional.mse_loss(model(data[ix]), data[ix])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    finally:
        torch.set_num_threads(threads)
    return encoder.eval()
