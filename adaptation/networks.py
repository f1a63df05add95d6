"""Networks of RMA (Kumar et al. 2021) as rsl_rl models.

- `LatentEncoder` mu: the task part of the privileged vector -> z (the "extrinsics").
- `RMAActor`: the base policy pi(obs, z) with z = mu(privileged), trained end to end by
  rsl_rl's PPO. The observation normaliser sees only `obs`.
- `HistoryAdapter` phi: the last H observations -> z_hat (1-D convolutions over time, as RMA).
- `RMAStudent`: pi(obs, phi(history)) with pi and mu frozen, trained by rsl_rl's Distillation
  on its own rollouts (DAgger); its loss adds ||z_hat - z||^2 to the action loss, so that
  z_hat is the latent (the prior and the online estimator work in latent space).
- The same model with phi frozen and pi learning is phase 3 (A-RMA, Kumar et al. 2022): PPO of
  pi on the adapter's estimate, so that pi copes with the adapter's errors.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
from rsl_rl.models import MLPModel
from tensordict import TensorDict

BASE_VEL_DIMS = 3
"""The privileged vector ends with the true base velocity: state, not task, so mu does not see it."""


FROZEN_ESTIMATE = "z_hat_pair"
"""Phase 3's update only: an observation group holding z_hat = phi(history), and beside it phi of the mirrored
history when the update mirrors, computed once per rollout. phi is frozen there, so every epoch and mini-batch would
compute the same numbers again (`updates.reuse_frozen_estimate`)."""


def encoder_input(privileged: torch.Tensor) -> torch.Tensor:
    """The part of the privileged vector that describes the task (what z encodes)."""
    return privileged[..., :-BASE_VEL_DIMS]


class LatentEncoder(nn.Module):
    """mu: task vector -> latent z."""

    def __init__(self, in_dim: int, latent_dim: int, hidden: tuple[int, ...] = (64, 32)):
        super().__init__()
        layers: list[nn.Module] = []
        for h in hidden:
            layers += [nn.Linear(in_dim, h), nn.ELU()]
            in_dim = h
        layers.append(nn.Linear(in_dim, latent_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, task: torch.Tensor) -> torch.Tensor:
        return self.net(task)


class HistoryAdapter(nn.Module):
    """phi: (batch, H, obs_dim) normalised history -> z_hat."""

    def __init__(self, obs_dim: int, history_length: int, latent_dim: int, channels: int = 32):
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(obs_dim, channels), nn.ELU())
        convs: list[nn.Module] = []
        length = history_length
        for kernel, stride in ((8, 4), (5, 1), (5, 1)):
            if length < kernel:
                break
            convs += [nn.Conv1d(channels, channels, kernel, stride), nn.ELU()]
            length = (length - kernel) // stride + 1
        self.convs = nn.Sequential(*convs)
        self.head = nn.Linear(channels * length, latent_dim)

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        x = self.embed(history).transpose(1, 2)  # (B, C, H)
        return self.head(self.convs(x).flatten(1))


class RMAActor(MLPModel):
    """pi(normalise(obs), mu(privileged)): the phase-1 policy. Observation groups: `policy`, `privileged`."""

    def __init__(self, obs: TensorDict, obs_groups: dict[str, list[str]], obs_set: str, output_dim: int,
                 latent_dim: int = 8, encoder_hidden: tuple[int, ...] = (64, 32),
                 task_decoder_hidden: tuple[int, ...] = (), **kwargs):
        self.latent_dim = latent_dim
        self.task_dim = encoder_input(obs["privileged"]).shape[-1]
        super().__init__(obs, {obs_set: ["policy"]}, obs_set, output_dim, **kwargs)
        self.encoder = LatentEncoder(self.task_dim, latent_dim, tuple(encoder_hidden))
        layers, width = [], latent_dim
        for hidden in task_decoder_hidden:
            layers += [nn.Linear(width, hidden), nn.ELU()]
            width = hidden
        head = nn.Linear(width, self.task_dim)
        self.task_decoder = nn.Sequential(*layers, head) if layers else head
        """Reads the (standardised) task back out of z: the auxiliary loss that keeps faults in z (train only).
        Linear by default; hidden layers let 8 dimensions carry more fault kinds than 8 directions."""

    def _get_latent_dim(self) -> int:
        return self.obs_dim + self.latent_dim

    def task_reconstruction_loss(self, privileged: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
        """Mean squared error of the task read back from z, standardised by `units` = (mean, spread) per part."""
        task = encoder_input(privileged)
        return nn.functional.mse_loss(self.task_decoder(self.encoder(task)), (task - units[0]) / units[1])

    def latent(self, obs: TensorDict) -> torch.Tensor:
        """z = mu(task part of the privileged vector)."""
        return self.encoder(encoder_input(obs["privileged"]))

    def get_latent(self, obs: TensorDict, masks=None, hidden_state=None) -> torch.Tensor:
        return torch.cat([self.obs_normalizer(obs["policy"]), self.latent(obs)], dim=-1)


class RMAStudent(MLPModel):
    """pi(normalise(obs), phi(history)) with pi frozen: the phase-2 student. Groups: `policy`, `history`."""

    def __init__(self, obs: TensorDict, obs_groups: dict[str, list[str]], obs_set: str, output_dim: int,
                 latent_dim: int = 8, history_length: int = 50, channels: int = 32, **kwargs):
        self.latent_dim = latent_dim
        self.history_length = history_length
        super().__init__(obs, {obs_set: ["policy"]}, obs_set, output_dim, **kwargs)
        self.adapter = HistoryAdapter(self.obs_dim, history_length, latent_dim, channels)
        self.teacher_encoder: LatentEncoder | None = None
        self.latent_loss = torch.zeros(())
        """||z_hat - z||^2 of the last forward pass (added to the distillation loss)."""
        self.feed_true_latent = False
        """Phase 3 with `finetune_true_latent`: this iteration pi gets the true z (needs the teacher's mu)."""

    def _get_latent_dim(self) -> int:
        return self.obs_dim + self.latent_dim

    def adopt_teacher(self, teacher: RMAActor) -> None:
        """Copy the teacher's normaliser, policy MLP and encoder, frozen: only phi learns."""
        self.obs_normalizer = copy.deepcopy(teacher.obs_normalizer)
        self.mlp = copy.deepcopy(teacher.mlp)
        self.teacher_encoder = copy.deepcopy(teacher.encoder)
        for module in (self.obs_normalizer, self.mlp, self.teacher_encoder):
            for p in module.parameters():
                p.requires_grad_(False)

    def estimate(self, obs: TensorDict) -> torch.Tensor:
        """z_hat = phi(normalised history), or the one phase 3 computed for this sample (`FROZEN_ESTIMATE`)."""
        if FROZEN_ESTIMATE in obs.keys():
            return obs[FROZEN_ESTIMATE][..., :self.latent_dim]
        hist = obs["history"].view(obs["history"].shape[0], self.history_length, self.obs_dim)
        return self.adapter(self.obs_normalizer(hist))

    def get_latent(self, obs: TensorDict, masks=None, hidden_state=None) -> torch.Tensor:
        z_hat = self.estimate(obs)
        if self.teacher_encoder is not None and "privileged" in obs.keys():
            target = self.teacher_encoder(encoder_input(obs["privileged"]))
            self.latent_loss = nn.functional.mse_loss(z_hat, target.detach())
            if self.feed_true_latent:
                z_hat = target.detach()
        return torch.cat([self.obs_normalizer(obs["policy"]), z_hat], dim=-1)

    def freeze_adapter(self) -> None:
        """Phase 3: phi (and the normaliser) stay as phase 2 left them; pi and the action noise learn."""
        for p in self.adapter.parameters():
            p.requires_grad_(False)
        for p in self.mlp.parameters():
            p.requires_grad_(True)

    def update_normalization(self, obs: TensorDict) -> None:
        """The normaliser is the teacher's and stays frozen (phi was trained on its units)."""


class PolicyGraph(nn.Module):
    """The exported policy: (obs, latent) -> actions, normaliser inside."""

    def __init__(self, actor: MLPModel):
        super().__init__()
        self.obs_normalizer = copy.deepcopy(actor.obs_normalizer)
        self.mlp = copy.deepcopy(actor.mlp)
        self.out = actor.distribution.as_deterministic_output_module() if actor.distribution else nn.Identity()

    def forward(self, obs: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        return self.out(self.mlp(torch.cat([self.obs_normalizer(obs), latent], dim=-1)))


class RobustGraph(nn.Module):
    """The exported `robust` baseline: obs -> actions (no latent), normaliser inside."""

    def __init__(self, actor: MLPModel):
        super().__init__()
        self.obs_normalizer = copy.deepcopy(actor.obs_normalizer)
        self.mlp = copy.deepcopy(actor.mlp)
        self.out = actor.distribution.as_deterministic_output_module() if actor.distribution else nn.Identity()

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.out(self.mlp(self.obs_normalizer(obs)))


class AdapterGraph(nn.Module):
    """The exported adapter: history (1, H, obs_dim) -> latent, normaliser inside."""

    def __init__(self, student: RMAStudent):
        super().__init__()
        self.obs_normalizer = copy.deepcopy(student.obs_normalizer)
        self.adapter = copy.deepcopy(student.adapter)

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        return self.adapter(self.obs_normalizer(history))


class EncoderGraph(nn.Module):
    """The exported encoder mu: privileged vector -> latent (for `oracle` and `nominal`, sim only)."""

    def __init__(self, actor: RMAActor):
        super().__init__()
        self.encoder = copy.deepcopy(actor.encoder)

    def forward(self, privileged: torch.Tensor) -> torch.Tensor:
        return self.encoder(encoder_input(privileged))
