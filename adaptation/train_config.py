"""Training presets: one dataclass, loaded from `config/train/<preset>.yaml`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from metaloco.paths import config_dir
from metaloco.schema import ConfigError, from_dict, load_yaml, spec
from metaloco.sim.env import EnvConfig


SCHEDULES = ("adaptive", "fixed")
"""rsl_rl PPO's learning-rate schedules."""


@dataclass
class PPOConfig:
    """rsl_rl PPO settings (phase 1 and the robust baseline)."""

    learning_rate: float = spec(1e-3, range=(1e-6, 1.0), doc="Adam step size (adaptive schedule).")
    num_learning_epochs: int = spec(5, range=(1, 50), doc="Epochs per update.")
    num_mini_batches: int = spec(4, range=(1, 256), doc="Mini-batches per epoch.")
    entropy_coef: float = spec(0.01, range=(0.0, 1.0), doc="Entropy bonus.")
    gamma: float = spec(0.99, range=(0.0, 1.0), doc="Discount.")
    lam: float = spec(0.95, range=(0.0, 1.0), doc="GAE lambda.")
    desired_kl: float = spec(0.01, range=(1e-5, 1.0), doc="Target KL of the adaptive schedule.")
    schedule: str = spec("adaptive", choices=SCHEDULES,
                         doc="rsl_rl's learning-rate schedule: `adaptive` scales the step size after every "
                             "mini-batch to hold the KL near desired_kl (between 1e-5 and 1e-2); `fixed` keeps "
                             "learning_rate.")
    init_std: float = spec(1.0, range=(0.01, 5.0), doc="Initial action noise.")


@dataclass
class CurriculumConfig:
    """Widen the task family as the policy succeeds."""

    start: float = spec(0.2, range=(0.0, 1.0), doc="Initial difficulty.")
    step: float = spec(0.1, range=(0.0, 1.0), doc="Increase per check that passes.")
    max_fall_rate: float = spec(0.25, range=(0.0, 1.0), doc="Raise difficulty only if fewer episodes than this fall.")
    min_episode_fraction: float = spec(0.6, range=(0.0, 1.0),
                                       doc="... and episodes last at least this fraction of the time limit ...")
    min_tracking: float = spec(0.5, range=(0.0, 1.0),
                               doc="... and velocity tracking, mean exp(-err^2/sigma) over the episode, reaches this.")
    fault_focus: float = spec(0.0, range=(0.0, 1.0),
                              doc="Share of drawn faults whose kind (joint, mode) is chosen in proportion to how "
                                  "often that kind has made recent episodes fall (adaptation/curriculum.py); the "
                                  "rest stay uniform. 0: every kind equally often, as before.")


@dataclass
class TrainConfig:
    """A complete training run: both RMA phases, the robust baseline and the prior."""

    name: str = spec(doc="Preset name.")
    seed: int = spec(0, doc="Seed of everything.")
    num_envs: int = spec(32, range=(1, 4096), doc="Parallel envs.")
    workers: int = spec(2, range=(1, 64), doc="Simulation worker processes.")
    steps_per_env: int = spec(48, range=(1, 1000), doc="Rollout length per iteration.")
    phase1_iterations: int = spec(600, range=(1, 100000), doc="PPO iterations of the base policy.")
    phase2_iterations: int = spec(100, range=(1, 100000), doc="Distillation iterations of the adapter.")
    finetune_iterations: int = spec(0, range=(0, 100000),
                                    doc="Phase 3 (A-RMA, Kumar et al. 2022): PPO of pi on z_hat from the frozen adapter, "
                                        "so that the policy works with the adapter's errors (0: no phase 3).")
    finetune_true_latent: float = spec(0.0, range=(0.0, 1.0),
                                       doc="Phase 3: the fraction of iterations (drawn at random) in which pi gets "
                                           "the true z instead of z_hat, so that it still reads a fixed or true "
                                           "latent as a task (`nominal`, `oracle`, adaptation off).")
    finetune_fault_focus: float | None = spec(None, range=(0.0, 1.0),
                                              doc="Phase 3: the fault curriculum's share (as curriculum.fault_focus) "
                                                  "while pi is fine-tuned on z_hat, so that phase 3 spends its "
                                                  "iterations on the fault kinds it still falls on (None: "
                                                  "curriculum.fault_focus, as in the other phases).")
    finetune_learning_rate: float | None = spec(None, range=(1e-7, 1.0),
                                                doc="Phase 3: Adam step size (None: ppo.learning_rate).")
    finetune_schedule: str | None = spec(None, choices=SCHEDULES,
                                         doc="Phase 3: the learning-rate schedule (None: ppo.schedule). `fixed` keeps "
                                             "finetune_learning_rate every update; in the shipped preset's phase 3 "
                                             "the adaptive one mostly sat at its 1e-5 floor and climbed (x1.5 per "
                                             "mini-batch whose KL came out low) up to 11 times that.")
    finetune_entropy_coef: float | None = spec(None, range=(0.0, 1.0),
                                               doc="Phase 3: the entropy bonus (None: ppo.entropy_coef). 0 stops "
                                                   "the bonus widening the action noise while pi is fine-tuned.")
    finetune_tracking_lin_vel: float | None = spec(None, range=(0.0, 100.0),
                                                   doc="Phase 3: the weight of the linear-velocity tracking reward "
                                                       "(None: env.reward.tracking_lin_vel), so that phase 3 can "
                                                       "pay more for holding the command after a fault without "
                                                       "retraining phases 1 and 2 on it.")
    finetune_keep_every: int = spec(0, range=(0, 100000),
                                    doc="Phase 3: also keep the checkpoint of every iteration divisible by this "
                                        "under phase3/kept/ (0: none), to study phase 3's course; the training "
                                        "is the same.")
    finetune_termination: float | None = spec(None, range=(-1000.0, 0.0),
                                              doc="Phase 3: the reward once on a fall (None: env.reward.termination), "
                                                  "so that phase 3 can price a fall against the tracking it pays.")
    finetune_latent_feed: str = spec("raw", choices=("raw", "fused"),
                                     doc="Phase 3: what pi is fed while it is fine-tuned. `raw`: phi's output at "
                                         "every step. `fused`: what the adaptation node feeds it on the robot "
                                         "(and `adaptive` in eval), phi's output fused with the prior "
                                         "(estimator.LatentEstimator: clamped to the prior's gate, smoothed between "
                                         "detected changes) and refreshed every 0.1 s, so that pi is trained on the "
                                         "latents it will run on. The prior is then fitted before phase 3.")
    readapt_iterations: int = spec(0, range=(0, 100000),
                                   doc="After phase 3: rsl_rl Distillation of phi, as in phase 2, on phase 3's pi "
                                       "(teacher: that pi on mu's z; student: that pi on phi's estimate), phi "
                                       "warm-started, for this many iterations (`readapt/`). Phase 2 trained phi on "
                                       "the states phase 1's pi visits; phase 3 changes pi and so the history phi "
                                       "reads. 0: phi stays phase 2's.")
    readapt_every: int = spec(0, range=(0, 100000),
                              doc="With readapt_iterations: re-adapt phi every this many phase-3 iterations too, "
                                  "and fine-tune pi's next block on the new phi (A-RMA's alternation). 0: once, "
                                  "after phase 3.")
    robust_iterations: int = spec(700, range=(0, 100000),
                                  doc="PPO iterations of the robust baseline (phases 1 + 2 + 3 and the re-adaptations: "
                                      "the same budget).")
    checkpoint_every: int = spec(10, range=(1, 10000), doc="Iterations between checkpoints and log rows.")
    latent_dim: int = spec(8, range=(1, 64), doc="Size of z.")
    history_length: int = spec(50, range=(10, 500), doc="Steps of history the adapter reads.")
    actor_hidden: list[int] = spec(default_factory=lambda: [256, 128], doc="Policy MLP.")
    critic_hidden: list[int] = spec(default_factory=lambda: [256, 128], doc="Critic MLP.")
    encoder_hidden: list[int] = spec(default_factory=lambda: [64, 32], doc="mu MLP.")
    adapter_channels: int = spec(32, range=(4, 512), doc="phi conv channels.")
    task_loss_weight: float = spec(0.0, range=(0.0, 100.0),
                                   doc="Phase 1: weight of the auxiliary loss that reads the task back out of z "
                                       "(0: z is shaped by PPO alone, as in RMA).")
    task_decoder_hidden: list[int] = spec(default_factory=list,
                                          doc="Hidden layers of the task decoder of that loss (empty: linear).")
    symmetry: bool = spec(False, doc="PPO (phase 1 and robust) also learns from every sample mirrored left-right "
                                     "(sim/mirror.py): twice the experience per fault kind.")
    latent_loss_weight: float = spec(1.0, range=(0.0, 100.0), doc="Weight of ||z_hat - z||^2 in phase 2.")
    adapter_epochs: int = spec(4, range=(1, 100), doc="Phase 2: passes over each rollout (rsl_rl Distillation epochs).")
    adapter_gradient_length: int = spec(0, range=(0, 1000),
                                        doc="Phase 2: rollout steps per Adam step (0: the whole rollout, one step "
                                            "per epoch). Smaller gives more steps from the same data.")
    adapter_episode_s: float = spec(0.0, range=(0.0, 3600.0),
                                    doc="Phase 2: episode length (0: env.episode_s). Shorter episodes show the "
                                        "adapter more tasks for the same steps; fault onsets are drawn in the "
                                        "same fraction of the episode as in env.")
    adapter_learning_rate: float = spec(1e-3, range=(1e-6, 1.0), doc="Phase 2: Adam step size of phi.")
    adapter_replay: int = spec(0, range=(0, 100000),
                               doc="Phase 2: DAgger's aggregation (Ross et al. 2011). phi learns from the student's "
                                   "last `adapter_replay` rollouts, in mini-batches drawn from all of them, instead "
                                   "of only from the newest rollout (0: rsl_rl's Distillation update). Each rollout "
                                   "holds about num_envs tasks; the buffer holds hundreds. It is not checkpointed: a "
                                   "resumed phase 2 starts it empty.")
    adapter_replay_stride: int = spec(4, range=(1, 1000),
                                      doc="Phase 2 with adapter_replay: keep every k-th step of each rollout "
                                          "(neighbouring windows of history are nearly the same; memory).")
    adapter_batch: int = spec(512, range=(1, 65536),
                              doc="Phase 2 with adapter_replay: samples per Adam step. Each iteration takes "
                                  "adapter_epochs x (rollout samples) / adapter_batch steps.")
    prior_samples: int = spec(4000, range=(10, 1000000), doc="Tasks drawn to fit the prior.")
    ppo: PPOConfig = field(default_factory=PPOConfig)
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    env: EnvConfig = field(default_factory=EnvConfig)

    def finetune_ppo(self) -> PPOConfig:
        """The PPO settings of phase 3: `ppo` with the finetune_* overrides that are set."""
        overrides = {"learning_rate": self.finetune_learning_rate, "schedule": self.finetune_schedule,
                     "entropy_coef": self.finetune_entropy_coef}
        return dataclasses.replace(self.ppo, **{k: v for k, v in overrides.items() if v is not None})

    def finetune_env(self) -> EnvConfig:
        """The env phase 3 trains in: `env`, with finetune_tracking_lin_vel and finetune_termination where set."""
        overrides = {"tracking_lin_vel": self.finetune_tracking_lin_vel, "termination": self.finetune_termination}
        overrides = {k: v for k, v in overrides.items() if v is not None}
        if not overrides:
            return self.env
        return dataclasses.replace(self.env, reward=dataclasses.replace(self.env.reward, **overrides))

    def adapter_env(self) -> EnvConfig:
        """The env phase 2 trains in: `env`, with `adapter_episode_s` and the fault onsets scaled to it."""
        if not self.adapter_episode_s or self.adapter_episode_s == self.env.episode_s:
            return self.env
        ratio = self.adapter_episode_s / self.env.episode_s
        faults = dataclasses.replace(self.env.tasks.faults, onset_s=[t * ratio for t in self.env.tasks.faults.onset_s])
        return dataclasses.replace(self.env, episode_s=self.adapter_episode_s,
                                   tasks=dataclasses.replace(self.env.tasks, faults=faults))

    def finetune_blocks(self) -> list[int]:
        """The phase-3 iterations at which phi is re-adapted: the ends of phase 3's blocks (one block, ending at
        finetune_iterations, without readapt_every)."""
        if self.finetune_iterations == 0:
            return []
        step = self.readapt_every if self.readapt_iterations and self.readapt_every else self.finetune_iterations
        return [*range(step, self.finetune_iterations, step), self.finetune_iterations]

    def validate(self, source: str, prefix: str) -> None:
        def key_of(name: str) -> str:
            return f"{prefix}.{name}" if prefix else name

        if self.readapt_iterations and not self.finetune_iterations:
            raise ConfigError(source, key_of("readapt_iterations"),
                              f"{self.readapt_iterations} is set without phase 3 (finetune_iterations is 0): phi "
                              "is re-adapted to phase 3's pi; set finetune_iterations or readapt_iterations: 0")
        if self.readapt_every and not self.readapt_iterations:
            raise ConfigError(source, key_of("readapt_every"),
                              f"{self.readapt_every} is set without readapt_iterations: it says how often to "
                              "re-adapt phi, readapt_iterations says for how long; set both or neither")
        if self.finetune_latent_feed == "fused" and self.finetune_true_latent:
            raise ConfigError(source, key_of("finetune_latent_feed"),
                              f"'fused' is set with finetune_true_latent ({self.finetune_true_latent}): the fused "
                              "feed filters phi's estimate over each episode, which iterations fed the true latent "
                              "would interrupt; set finetune_true_latent: 0 or finetune_latent_feed: raw")
        g = self.adapter_gradient_length
        key = key_of("adapter_gradient_length")
        if g and self.adapter_replay:
            raise ConfigError(source, key,
                              f"{g} is set with adapter_replay ({self.adapter_replay}): it splits rsl_rl's update of "
                              "the newest rollout, which the replay buffer replaces; set adapter_batch instead")
        if g and self.steps_per_env % g:
            raise ConfigError(source, key,
                              f"{g} does not divide steps_per_env ({self.steps_per_env}): the rest of each rollout "
                              "would never be learned from; use a divisor of it, or 0 for the whole rollout")


EXTENDS = "extends"
"""A preset's key naming another preset whose settings it starts from (its own keys override them)."""


def load_train_config(preset: str) -> TrainConfig:
    """Load a preset by name (`smoke`, `full`) or YAML path."""
    path = _preset_path(preset)
    return from_dict(TrainConfig, _preset_dict(path, ()), str(path))


def _preset_path(preset: str) -> Path:
    path = Path(preset) if preset.endswith((".yaml", ".yml")) else config_dir() / "train" / f"{preset}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (config_dir() / "train").glob("*.yaml"))
        raise ConfigError(str(path), "preset", f"unknown training preset '{preset}'; known presets are {known}")
    return path


def _preset_dict(path: Path, chain: tuple[Path, ...]) -> dict:
    """The preset file's settings on top of those of the preset it `extends` (tables merged key by key, every
    other value replaced)."""
    raw = load_yaml(path)
    if not isinstance(raw, dict):
        return raw  # from_dict says what was expected
    base = raw.pop(EXTENDS, None)
    if base is None:
        return raw
    if not isinstance(base, str):
        raise ConfigError(str(path), EXTENDS, f"{base!r} is not a preset name; expected e.g. `extends: full`")
    try:
        base_path = _preset_path(base)
    except ConfigError as err:
        raise ConfigError(str(path), EXTENDS, err.problem) from None
    if base_path.resolve() in chain + (path.resolve(),):
        raise ConfigError(str(path), EXTENDS, f"'{base}' extends this preset in turn; a preset cannot extend itself")
    return _merged(_preset_dict(base_path, chain + (path.resolve(),)), raw)


def _merged(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = (_merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict)
                    else value)
    return out
