"""Online latent estimation: the adapter's raw estimate fused with the simulator prior.

Every update takes z_hat = phi(history) and:
1. measures how plausible it is under the prior (squared Mahalanobis distance d2);
   beyond the prior's `gate` (chi-square 99.9% by default) it is pulled back onto the
   gate's ellipsoid and flagged low-confidence;
2. detects a change when z_hat jumps away from the running estimate by more than
   `change_threshold` (Mahalanobis, in the prior's metric); on a change the filter restarts
   from the new value instead of averaging old and new;
3. otherwise smooths with an exponential filter (time constant `tau_s`);
4. names a suspected joint when the prior's read-out of joint health says one joint is
   weak or locked and the others are not.

What the policy is fed (`policy_latent`, `latent_source`): the fused estimate (the default, DESIGN.md's
`adaptive`), or the adapter's raw output, which a phase-3 policy is fine-tuned on unless its preset sets
`finetune_latent_feed: fused`. Either way the fused estimate says what the estimator concluded (change, confidence,
suspected joint).

Numpy only: it runs in the adaptation node on the robot.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from metaloco.adaptation.prior import LatentPrior
from metaloco.schema import ConfigError

ADAPT_PERIOD_S = 0.1
"""The adaptation module's period (RMA runs it at ~10 Hz): `adaptive` in eval and phase 3 on the fused feed
refresh the latent at it."""


def adapt_every(dt: float) -> int:
    """Control steps of `dt` s per refresh of the latent (ADAPT_PERIOD_S)."""
    return max(1, int(round(ADAPT_PERIOD_S / dt)))


def refresh_due(steps, every: int):
    """Whether the latent is refreshed at control step `steps` (1 = an episode's first; an int or a tensor of
    them): on the first step and every `every`-th after."""
    return (steps % every == 1) | (every == 1)


CHI2_999 = {2: 13.8, 4: 18.5, 6: 22.5, 8: 26.1, 12: 32.9, 16: 39.3}


@dataclass
class Estimate:
    """The fused latent and what the estimator concluded."""

    latent: np.ndarray
    raw: np.ndarray
    confidence: float
    """In (0, 1]: 1 at the prior mean, falling with Mahalanobis distance; low when clamped."""
    clamped: bool
    change_detected: bool
    suspected_joint: str | None
    mahalanobis2: float
    details: dict = field(default_factory=dict)


class LatentEstimator:
    """Fuses raw adapter outputs with the prior.

    Args:
        prior: The simulator prior.
        tau_s: Smoothing time constant between changes.
        change_threshold: Mahalanobis jump (not squared) that counts as a change.
        gate: Squared Mahalanobis distance beyond which an estimate is clamped (default chi2 99.9%).
    """

    def __init__(self, prior: LatentPrior, tau_s: float = 0.3, change_threshold: float = 2.5, gate: float | None = None):
        self.prior = prior
        self.tau_s = tau_s
        self.change_threshold = change_threshold
        self.gate = gate if gate is not None else CHI2_999.get(prior.dim, prior.dim + 4.0 * np.sqrt(2.0 * prior.dim))
        self.state = prior.mean.copy()
        self.last_t: float | None = None
        self.changes = 0

    def reset(self) -> None:
        self.state = self.prior.mean.copy()
        self.last_t = None

    def clamp(self, z: np.ndarray) -> tuple[np.ndarray, float, bool]:
        """Pull z back onto the prior's gate if it lies beyond it. Returns (z, d2, clamped)."""
        z = np.asarray(z, dtype=np.float64)
        d2 = self.prior.mahalanobis2(z)
        if not np.isfinite(d2):
            return self.state.copy(), float("inf"), True
        if d2 <= self.gate:
            return z, d2, False
        return self.prior.mean + (z - self.prior.mean) * np.sqrt(self.gate / d2), d2, True

    def update(self, z_raw: np.ndarray, t: float) -> Estimate:
        """Fuse one raw estimate taken at time `t` (s)."""
        z_raw = np.asarray(z_raw, dtype=np.float64)
        z, d2, clamped = self.clamp(z_raw)
        jump = np.sqrt(max(0.0, float((z - self.state) @ self.prior.precision @ (z - self.state))))
        change = self.last_t is not None and jump > self.change_threshold
        if self.last_t is None or change:
            self.state = z.copy()
        else:
            alpha = 1.0 - np.exp(-max(t - self.last_t, 0.0) / self.tau_s)
            self.state = self.state + alpha * (z - self.state)
        self.last_t = t
        self.changes += int(change)
        confidence = float(np.exp(-0.5 * d2 / self.prior.dim))
        if clamped:
            confidence = min(confidence, 0.05)
        return Estimate(latent=self.state.copy(), raw=z_raw, confidence=confidence, clamped=clamped,
                        change_detected=bool(change), suspected_joint=self.suspect(self.state),
                        mahalanobis2=d2, details={"jump": float(jump)})

    def suspect(self, z: np.ndarray) -> str | None:
        """The joint the read-out says is failing, if exactly one stands out."""
        scale, locked = self.prior.joint_health(z)
        badness = np.maximum(1.0 - scale, locked)
        order = np.argsort(badness)[::-1]
        if badness[order[0]] > 0.4 and badness[order[0]] - badness[order[1]] > 0.2:
            return self.prior.joint_names[int(order[0])]
        return None


LATENT_SOURCES = ("fused", "raw")
"""What a policy is fed: 'fused', the estimate fused with the prior (clamped to its gate, smoothed between
changes; the default), or 'raw', the adapter's output as it is. Phase 3 fine-tunes pi on the raw output by default
(`finetune_latent_feed`), so such a phase-3 policy fed the fused one runs on latents it was not trained on.
Measured on the shipped phase-3 models (models/a1/HISTORY.md, session 26): the raw feed recovers from a limp rear
thigh within 1 s in 10 of 10 episodes (fused: 2) but scores about 7% less return on random tasks of the training
family, below `nominal` there."""


def check_latent_source(source: str) -> str:
    """`source` if it is one of LATENT_SOURCES, else a ConfigError naming the allowed values."""
    if source not in LATENT_SOURCES:
        raise ConfigError("--latent-source", "latent_source",
                          f"got {source!r}; allowed values are {list(LATENT_SOURCES)}")
    return source


def policy_latent(estimate: Estimate, source: str) -> np.ndarray:
    """The latent to feed the policy from one update: the raw estimate for `source` 'raw' (when finite: a
    non-finite output falls back to the fused estimate, which keeps the last good state), else the fused one."""
    if source == "raw" and np.all(np.isfinite(estimate.raw)):
        return np.array(estimate.raw, dtype=np.float64)
    return estimate.latent.copy()
