"""The simulator prior: the distribution of the latent z over the training tasks.

A full-covariance Gaussian fitted to z = mu(task) over tasks drawn from the training
sampler, saved as `prior.json`. It also carries a linear read-out from z to each
joint's health (torque scale and locked flag), fitted on the same draws, which the
online estimator uses to name the joint it suspects.

Nothing here needs torch: the adaptation node loads `prior.json` with numpy alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from metaloco.schema import ConfigError


@dataclass
class LatentPrior:
    """Gaussian prior over z, and a linear read-out of joint health."""

    mean: np.ndarray
    cov: np.ndarray
    nominal: np.ndarray
    """z of the nominal, undamaged task (the `nominal` method's latent)."""
    joint_names: list[str]
    readout: np.ndarray
    """(latent_dim + 1, 2 * n_joints): [z, 1] -> [joint torque scale..., joint locked...]."""
    samples: int = 0

    def __post_init__(self) -> None:
        self.mean = np.asarray(self.mean, dtype=np.float64)
        self.cov = np.asarray(self.cov, dtype=np.float64)
        self.nominal = np.asarray(self.nominal, dtype=np.float64)
        self.readout = np.asarray(self.readout, dtype=np.float64)
        self.precision = np.linalg.inv(self.cov)

    @property
    def dim(self) -> int:
        return len(self.mean)

    def mahalanobis2(self, z: np.ndarray) -> float:
        """Squared Mahalanobis distance of z from the prior mean."""
        d = np.asarray(z, dtype=np.float64) - self.mean
        return float(d @ self.precision @ d)

    def joint_health(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Read-out of (torque scale, locked score) per joint from a latent."""
        out = np.append(np.asarray(z, dtype=np.float64), 1.0) @ self.readout
        n = len(self.joint_names)
        return out[:n], out[n:]

    def to_json(self) -> dict:
        return {"type": "gaussian_full_cov", "dim": self.dim, "samples": self.samples,
                "mean": self.mean.tolist(), "cov": self.cov.tolist(), "nominal": self.nominal.tolist(),
                "joint_names": self.joint_names, "readout": self.readout.tolist(),
                "readout_outputs": "joint torque scale (1 healthy, 0 limp) then joint locked score, per joint"}

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> LatentPrior:
        """Load `prior.json`, with errors naming the file and the key."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(str(path), "", "prior file not found")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ConfigError(str(path), "", f"not valid JSON: {err}") from None
        for key in ("mean", "cov", "nominal", "joint_names", "readout"):
            if key not in data:
                raise ConfigError(str(path), key, "required key is missing")
        dim = len(data["mean"])
        if np.asarray(data["cov"]).shape != (dim, dim):
            raise ConfigError(str(path), "cov", f"expected a {dim}x{dim} matrix")
        return cls(mean=data["mean"], cov=data["cov"], nominal=data["nominal"], joint_names=data["joint_names"],
                   readout=data["readout"], samples=int(data.get("samples", 0)))


def fit_prior(latents: np.ndarray, health: np.ndarray, nominal: np.ndarray, joint_names: list[str]) -> LatentPrior:
    """Fit the prior.

    Args:
        latents: (N, latent_dim) z over training tasks.
        health: (N, 2 * n_joints) the true [torque scale, locked] per joint of each task.
        nominal: z of the nominal task.
        joint_names: Joint order of `health`.

    Returns:
        The fitted prior.
    """
    mean = latents.mean(axis=0)
    cov = np.cov(latents, rowvar=False) + 1e-6 * np.eye(latents.shape[1])
    design = np.hstack([latents, np.ones((len(latents), 1))])
    readout, *_ = np.linalg.lstsq(design, health, rcond=None)
    return LatentPrior(mean=mean, cov=cov, nominal=nominal, joint_names=list(joint_names), readout=readout,
                       samples=len(latents))
