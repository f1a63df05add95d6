"""A curriculum over the fault family: draw more often the fault kinds the policy still falls on.

Drawn uniformly, each of the 44 fault kinds (11 joints x 4 modes, `TaskSampler.fault_kinds`) gets about 1/44 of the
faulted episodes: at the `full` preset's budget some 30 episodes each in phase 1. A weak hip costs the policy
little, a limp rear thigh makes it fall; the same share of experience leaves the hard kinds unlearned (session 14:
the AMD EPYC's phase 1 fell on every `rl_thigh_limp` episode whatever latent it was given). `FaultFocus` keeps a
decaying count of episodes and falls per kind and draws a share `focus` of the faults in proportion to each kind's
estimated fall rate, the rest uniformly, so no kind is forgotten. It reads only training episodes, never the
scenario files. In the spirit of legged_gym's terrain curriculum (Rudin et al. 2022), which moves each robot to
harder terrain as it succeeds, here by kind of fault instead of by level.
"""

from __future__ import annotations

import numpy as np
import torch

PRIOR_EPISODES = 5.0
PRIOR_FALLS = 1.0
"""A kind not yet seen counts as 1 fall in 5 episodes: its estimate starts near a typical training fall rate."""


class FaultFocus:
    """Fall rates per fault kind and the draw probabilities that follow from them.

    Args:
        n_kinds: Number of fault kinds.
        focus: Share of faults drawn by fall rate (0-1); the rest are uniform.
        decay: Each update first multiplies the counts by this, so that the estimate follows the policy
            as it learns (0.95, once per checkpoint block of 10 iterations: a block 20 ago weighs about a third).
    """

    def __init__(self, n_kinds: int, focus: float, decay: float = 0.95):
        self.focus = focus
        self.decay = decay
        self.episodes = np.zeros(n_kinds)
        self.falls = np.zeros(n_kinds)

    def update(self, kinds: list[int], falls: list[bool]) -> np.ndarray:
        """Count finished episodes (kind -1: no fault) and return the new draw probabilities."""
        self.episodes *= self.decay
        self.falls *= self.decay
        for kind, fell in zip(kinds, falls):
            if kind >= 0:
                self.episodes[kind] += 1.0
                self.falls[kind] += float(fell)
        return self.weights()

    def fall_rates(self) -> np.ndarray:
        return (self.falls + PRIOR_FALLS) / (self.episodes + PRIOR_EPISODES)

    def weights(self) -> np.ndarray:
        """Probabilities over the kinds: (1 - focus) uniform + focus in proportion to the fall rates."""
        rates = self.fall_rates()
        n = len(rates)
        return (1.0 - self.focus) / n + self.focus * rates / rates.sum()

    def state(self) -> torch.Tensor:
        """The counts as a tensor, for the checkpoint (2, n_kinds)."""
        return torch.as_tensor(np.stack([self.episodes, self.falls]))

    def load(self, state: torch.Tensor) -> None:
        self.episodes, self.falls = (row.astype(np.float64) for row in state.numpy())
