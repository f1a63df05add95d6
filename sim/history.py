"""The observation history the adaptation module reads (RMA, Kumar et al. 2021: the last ~0.5-1 s).

Oldest first, newest last; zeros before the first observation, exactly as
`SubprocVecEnv`'s `history` group builds it in training.
"""

from __future__ import annotations

import numpy as np


class ObsHistory:
    """A fixed-length ring of observations.

    Args:
        length: Number of steps kept.
        obs_dim: Size of one observation.
    """

    def __init__(self, length: int, obs_dim: int):
        self.length = length
        self.obs_dim = obs_dim
        self._buf = np.zeros((length, obs_dim), np.float32)
        self.count = 0
        """Observations pushed since the last reset."""

    def reset(self) -> None:
        self._buf[:] = 0.0
        self.count = 0

    def push(self, obs: np.ndarray) -> None:
        """Append the newest observation, dropping the oldest."""
        self._buf[:-1] = self._buf[1:]
        self._buf[-1] = obs
        self.count += 1

    def array(self) -> np.ndarray:
        """The history as (1, length, obs_dim) float32, the adapter's input."""
        return self._buf[None].copy()
