"""`metaloco train`: RMA meta-training (Kumar et al. 2021) with rsl_rl, resumable.

Phases, each checkpointed every `checkpoint_every` iterations into `OUT/<phase>/`:
1. `phase1`: PPO (rsl_rl) of pi(obs, mu(privileged)) over the task family, with a
   curriculum that widens the family while the policy keeps its feet.
2. `phase2`: rsl_rl Distillation of the adapter phi(history) on the student's own
   rollouts (DAgger), pi and mu frozen, loss = action MSE + ||z_hat - z||^2.
3. `phase3` (when `finetune_iterations` > 0): PPO of pi on z_hat = phi(history), phi frozen
   (A-RMA, Kumar et al. 2022). Phase 1 trains pi on the true z; phase 2 leaves phi with an error
   that pi never saw. Here pi learns to act well on the estimate it will get on the robot.
   With `readapt_iterations`, `readapt/at_NNNNN/` re-adapts phi to phase 3's pi after phase 3 (and, with
   `readapt_every`, after each block of that many phase-3 iterations, the next block fine-tuning pi on the new phi):
   phase 2's Distillation with phase 3's pi as teacher (on mu's z) and student (on phi's estimate), phi
   warm-started. Phase 2 fitted phi to the histories phase 1's pi produces; phase 3 changes them.
4. `robust`: PPO of an obs-only policy on the same family and curriculum, with the same
   environment-step budget as phases 1 to 3 together (the domain-randomisation baseline).
5. the prior: z over tasks drawn from the final training distribution (`prior.json`).
6. export to ONNX (`OUT/export/`), see `export.py`.

Logs: `OUT/<phase>/progress.csv` (one row per checkpoint), and a progress line on stderr.
Checkpoints hold only tensors and numbers and load with `weights_only=True`. A run started again in its folder
resumes each phase from its last checkpoint, with fresh random draws (`phase_seed`): it does not repeat an
uninterrupted run bit for bit, which restarting every environment's episode would forbid anyway.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import yaml

from metaloco.adaptation import numerics
from metaloco.adaptation.curriculum import FaultFocus
from metaloco.adaptation.estimator import adapt_every
from metaloco.adaptation.networks import FROZEN_ESTIMATE, LatentEncoder, RMAActor, RMAStudent, encoder_input
from metaloco.adaptation.prior import fit_prior
from metaloco.adaptation.train_config import PPOConfig, TrainConfig, load_train_config
from metaloco.adaptation.updates import (FusedFeed, add_replay, add_task_loss, feed_fused_estimate,
                                         reuse_frozen_estimate, rollouts_on_one_thread, skip_mirror_diagnostic)
from metaloco.schema import ConfigError, from_dict, to_dict
from metaloco.sim.env import EnvConfig
from metaloco.sim.mirror import MIRROR_SCREENS_HELD_OUT
from metaloco.sim.vec_env import SubprocVecEnv

PHASES = ("phase1", "phase2", "phase3", "robust")
SEED_OFFSETS = {"phase1": 0, "phase2": 1000, "phase3": 3000, "robust": 2000, "readapt": 4000}
"""Added to `seed` for each phase's environments and torch; phase 3's k-th block and k-th re-adaptation add k."""


@dataclass
class PhaseResult:
    iterations: int
    env_steps: int
    wall_s: float
    difficulty: float


def _ppo_train_cfg(cfg: TrainConfig, actor: dict, critic_groups: list[str], actor_groups: list[str],
                   ppo: PPOConfig | None = None) -> dict:
    p = ppo or cfg.ppo
    train = {
        "num_steps_per_env": cfg.steps_per_env, "save_interval": 10**9,
        "obs_groups": {"actor": actor_groups, "critic": critic_groups},
        "algorithm": {"class_name": "PPO", "num_learning_epochs": p.num_learning_epochs,
                      "num_mini_batches": p.num_mini_batches, "learning_rate": p.learning_rate, "clip_param": 0.2,
                      "gamma": p.gamma, "lam": p.lam, "value_loss_coef": 1.0, "entropy_coef": p.entropy_coef,
                      "max_grad_norm": 1.0, "use_clipped_value_loss": True, "schedule": p.schedule,
                      "desired_kl": p.desired_kl},
        "actor": actor,
        "critic": {"class_name": "MLPModel", "hidden_dims": list(cfg.critic_hidden), "activation": "elu",
                   "obs_normalization": True},
    }
    if cfg.symmetry:
        from metaloco.hardware.robot_config import load_robot
        from metaloco.sim.gait import GAIT_OUTPUTS
        from metaloco.sim.mirror import rsl_rl_augmentation

        robot = load_robot(cfg.env.robot)
        n = robot.n_joints
        held_out = tuple(robot.joint_names.index(j) for j in cfg.env.tasks.faults.held_out_joints)
        train["algorithm"]["symmetry_cfg"] = {
            "use_data_augmentation": True, "use_mirror_loss": False,
            "data_augmentation_func": rsl_rl_augmentation(n, n + GAIT_OUTPUTS, swapped=(FROZEN_ESTIMATE,),
                                                          held_out_joints=held_out)}
    return train


def _actor_cfg(cfg: TrainConfig, rma: bool) -> dict:
    actor = {"class_name": RMAActor if rma else "MLPModel", "hidden_dims": list(cfg.actor_hidden),
             "activation": "elu", "obs_normalization": True,
             "distribution_cfg": {"class_name": "GaussianDistribution", "init_std": cfg.ppo.init_std}}
    if rma:
        actor.update(latent_dim=cfg.latent_dim, encoder_hidden=tuple(cfg.encoder_hidden),
                     task_decoder_hidden=tuple(cfg.task_decoder_hidden))
    return actor


def make_ppo_runner(cfg: TrainConfig, venv: SubprocVecEnv, rma: bool):
    """An rsl_rl OnPolicyRunner for phase 1 (rma=True) or the robust baseline."""
    from rsl_rl.runners import OnPolicyRunner

    train_cfg = _ppo_train_cfg(cfg, _actor_cfg(cfg, rma), ["policy", "privileged"],
                               ["policy", "privileged"] if rma else ["policy"])
    with contextlib.redirect_stdout(io.StringIO()):
        runner = OnPolicyRunner(venv, train_cfg, log_dir=None)
    skip_mirror_diagnostic(runner.alg)
    if rma and cfg.task_loss_weight > 0:
        add_task_loss(runner.alg, cfg)
    return runner


def make_distillation_runner(cfg: TrainConfig, venv: SubprocVecEnv, teacher_state: dict):
    """An rsl_rl DistillationRunner whose student learns phi, with pi and mu copied from phase 1 and frozen."""
    from rsl_rl.runners import DistillationRunner

    teacher = _actor_cfg(cfg, rma=True)
    student = {"class_name": RMAStudent, "hidden_dims": list(cfg.actor_hidden), "activation": "elu",
               "obs_normalization": True, "latent_dim": cfg.latent_dim, "history_length": cfg.history_length,
               "channels": cfg.adapter_channels,
               # A small fixed action noise: DAgger rollouts stay close to the student's own states.
               "distribution_cfg": {"class_name": "GaussianDistribution", "init_std": 0.05, "learn_std": False}}
    train_cfg = {
        "num_steps_per_env": cfg.steps_per_env, "save_interval": 10**9,
        "obs_groups": {"student": ["policy", "history"], "teacher": ["policy", "privileged"]},
        "algorithm": {"class_name": "Distillation", "num_learning_epochs": cfg.adapter_epochs,
                      "gradient_length": cfg.adapter_gradient_length or cfg.steps_per_env,
                      "learning_rate": 1e-3, "max_grad_norm": 1.0, "loss_type": "mse"},
        "student": student, "teacher": teacher,
    }
    with contextlib.redirect_stdout(io.StringIO()):
        runner = DistillationRunner(venv, train_cfg, log_dir=None)
    alg = runner.alg
    alg.load({"actor_state_dict": teacher_state}, None, strict=True)
    alg.student.adopt_teacher(alg.teacher)
    weight = cfg.latent_loss_weight
    student_model = alg.student
    alg.loss_fn = lambda actions, target: (torch.nn.functional.mse_loss(actions, target)
                                           + weight * student_model.latent_loss)
    alg.optimizer = torch.optim.Adam(student_model.adapter.parameters(), lr=cfg.adapter_learning_rate)
    if cfg.adapter_replay > 0:
        add_replay(alg, cfg)
    return runner


def adapter_state(student_state: dict) -> dict:
    """phi's weights out of a student's (or phase 3 actor's) state."""
    return {k.removeprefix("adapter."): v for k, v in student_state.items() if k.startswith("adapter.")}


def make_finetune_runner(cfg: TrainConfig, venv: SubprocVecEnv, phase1: dict, phase2: dict,
                         adapter: dict | None = None, prior=None):
    """An rsl_rl OnPolicyRunner for phase 3: pi (from phase 1) on phi's estimate (from phase 2, frozen).

    The critic starts from phase 1's and still sees the privileged vector; the optimiser starts afresh, with
    `cfg.finetune_ppo()` (the finetune_* overrides of `cfg.ppo`). `adapter` (phi's state) replaces phase 2's phi.
    With `cfg.finetune_latent_feed` 'fused', pi is fed phi's estimate fused with `prior` (required then) by the
    runner's `fused_feed`.
    """
    from rsl_rl.runners import OnPolicyRunner

    if cfg.finetune_latent_feed == "fused" and prior is None:
        raise ValueError("phase 3 on the fused estimate needs the latent prior")
    actor = _actor_cfg(cfg, rma=False)
    actor.update(class_name=RMAStudent, latent_dim=cfg.latent_dim, history_length=cfg.history_length,
                 channels=cfg.adapter_channels)
    mixed = cfg.finetune_true_latent > 0
    train_cfg = _ppo_train_cfg(cfg, actor, ["policy", "privileged"],
                               ["policy", "history", "privileged"] if mixed else ["policy", "history"],
                               ppo=cfg.finetune_ppo())
    with contextlib.redirect_stdout(io.StringIO()):
        runner = OnPolicyRunner(venv, train_cfg, log_dir=None)
    alg, teacher = runner.alg, phase1["actor_state_dict"]
    state = {k: v for k, v in teacher.items() if not k.startswith(("encoder.", "task_decoder."))}
    phi = adapter_state(phase2["student_state_dict"]) if adapter is None else adapter
    state.update({"adapter." + k: v for k, v in phi.items()})
    if mixed:  # mu from phase 1, frozen, gives the true z in the iterations that use it
        task_dim = encoder_input(venv.get_observations()["privileged"]).shape[-1]
        alg.actor.teacher_encoder = LatentEncoder(task_dim, cfg.latent_dim, tuple(cfg.encoder_hidden))
        state.update({"teacher_" + k: v for k, v in teacher.items() if k.startswith("encoder.")})
    alg.actor.load_state_dict(state, strict=True)
    alg.critic.load_state_dict(phase1["critic_state_dict"], strict=True)
    alg.actor.freeze_adapter()
    if mixed:
        for p in alg.actor.teacher_encoder.parameters():
            p.requires_grad_(False)
        rng = torch.Generator().manual_seed(cfg.seed + 3)
        ppo_update = alg.update

        def draw() -> None:
            alg.actor.feed_true_latent = bool(torch.rand((), generator=rng) < cfg.finetune_true_latent)

        def update() -> dict[str, float]:
            stats = ppo_update()  # with the latent the rollout used; the next rollout draws again
            draw()
            return stats

        alg.update = update
        draw()
    skip_mirror_diagnostic(alg)
    if cfg.finetune_latent_feed == "fused":
        runner.fused_feed = FusedFeed(prior, venv.num_envs, adapt_every(venv.dt), venv.dt,
                                      width=2 if cfg.symmetry else 1)
        feed_fused_estimate(alg, runner.fused_feed)
    else:
        reuse_frozen_estimate(alg)
    return runner


def readapt_teacher(phase1_actor: dict, tuned_actor: dict) -> dict:
    """Phase 3's pi as a phase-1 actor state: its MLP, with phase 1's mu and normaliser (phase 3 trains neither)."""
    for k in ("obs_normalizer._mean", "obs_normalizer._std"):
        if not torch.equal(tuned_actor[k], phase1_actor[k]):
            raise RuntimeError(f"phase 3 changed the observation normaliser ({k}); phi cannot be re-adapted to its "
                               "pi with phase 1's")
    return {k: (tuned_actor[k] if k.startswith("mlp.") else v) for k, v in phase1_actor.items()}


def make_readapt_runner(cfg: TrainConfig, venv: SubprocVecEnv, phase1_actor: dict, tuned_actor: dict,
                        adapter: dict):
    """Phase 2's Distillation runner, re-adapting phi (warm-started from `adapter`) to phase 3's pi."""
    runner = make_distillation_runner(cfg, venv, readapt_teacher(phase1_actor, tuned_actor))
    runner.alg.student.adapter.load_state_dict(adapter)
    return runner


def _episode_stats(venv: SubprocVecEnv, mark: int,
                   kind_weights: np.ndarray | None = None) -> tuple[float, float, float, float, int]:
    """Mean return, length, fall rate and tracking of the episodes finished since `mark`, and their number.

    With `kind_weights` (the fault focus's draw probabilities over the fault kinds while they ran), each faulted
    episode is weighted by uniform / drawn probability of its kind: the means are then those of the task family
    as defined, not of the tilted draw, so the difficulty curriculum is not held back by the hard kinds the focus
    seeks out.
    """
    returns = venv.completed_returns[mark:]
    if not returns:
        return float("nan"), float("nan"), float("nan"), float("nan"), 0
    lengths = venv.completed_lengths[mark:]
    falls = venv.completed_falls[mark:]
    tracking = venv.completed_tracking[mark:]
    if kind_weights is None:
        mean = np.mean
    else:
        kinds = np.asarray(venv.completed_fault_kinds[mark:])
        weights = np.ones(len(kinds))
        faulted = kinds >= 0
        weights[faulted] = (1.0 / len(kind_weights)) / kind_weights[kinds[faulted]]
        mean = lambda values: np.average(values, weights=weights)  # noqa: E731
    return float(mean(returns)), float(mean(lengths)), float(mean(falls)), float(mean(tracking)), len(returns)


def phase_seed(base: int, iteration: int) -> int:
    """The seed of a phase's environments and torch when it starts `iteration` iterations past where it was meant to
    start: `base` there, so an uninterrupted run is unchanged; on a resume one drawn from (base, iteration), so the
    resumed phase does not replay the tasks, commands and action noise of its first iterations. A resume still does
    not repeat an uninterrupted run (the environments restart their episodes), but two resumes from one checkpoint
    repeat each other."""
    if iteration == 0:
        return base
    return int(np.random.SeedSequence([base, iteration]).generate_state(1)[0] % 2**31)


def run_phase(name: str, cfg: TrainConfig, out: Path, total_iterations: int,
              make_runner: Callable[[SubprocVecEnv], object], history_length: int = 0,
              fixed_difficulty: float | None = None, log: Callable[[str], None] = print,
              env_cfg: EnvConfig | None = None, fault_focus: float | None = None,
              keep_every: int = 0, seed_offset: int | None = None,
              after_load: Callable[[object], None] | None = None, first_iteration: int = 0) -> PhaseResult:
    """Run (or resume) one training phase to `total_iterations` in `env_cfg` (default `cfg.env`),
    checkpointing as it goes into `out/name`. `fault_focus` overrides `cfg.curriculum.fault_focus` for this phase.
    With `keep_every` > 0, the checkpoint of every iteration divisible by it is also kept as `kept/it_NNNNN.pt`
    (for studying a phase's course; the training is the same). `seed_offset` defaults to the phase's in
    `SEED_OFFSETS`; `after_load` is called on the runner after its checkpoint is loaded (when there is one).
    `first_iteration` is where this call starts when nothing was interrupted (phase 3's later blocks continue the
    phase's checkpoint under their own seed offset): only a checkpoint past it is a resume (`phase_seed`)."""
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    ckpt_path = folder / "checkpoint.pt"
    csv_path = folder / "progress.csv"
    seed_offset = SEED_OFFSETS[name] if seed_offset is None else seed_offset
    saved = torch.load(ckpt_path, weights_only=True) if ckpt_path.is_file() else {}
    if saved and int(saved["iteration"]) >= total_iterations:  # finished: nothing to seed, simulate or train
        it = int(saved["iteration"])
        log(f"[{name}] done: iteration {it} of {total_iterations} in its checkpoint")
        return PhaseResult(iterations=it, env_steps=it * cfg.num_envs * cfg.steps_per_env,
                           wall_s=float(saved["wall_s"]), difficulty=float(saved["difficulty"]))
    base = cfg.seed + seed_offset
    resumed = int(saved.get("iteration", first_iteration)) - first_iteration  # iterations past the planned start
    seed = phase_seed(base, resumed)
    venv = SubprocVecEnv(env_cfg or cfg.env, cfg.num_envs, cfg.workers, seed=seed, history_length=history_length)
    threads = torch.get_num_threads()
    try:
        torch.manual_seed(seed)
        runner = make_runner(venv)
        rollouts_on_one_thread(runner.alg, threads)
        it, wall = 0, 0.0
        difficulty = cfg.curriculum.start if fixed_difficulty is None else fixed_difficulty
        if saved:
            runner.alg.load(saved["alg"], None, strict=True)
            it, wall, difficulty = int(saved["iteration"]), float(saved["wall_s"]), float(saved["difficulty"])
            fresh = (f"; environments and torch seeded {seed}, not {base}, so the random draws do not replay the "
                     "phase's first ones" if resumed else "")
            log(f"[{name}] resuming at iteration {it} (difficulty {difficulty:.2f}{fresh})")
            if after_load is not None:
                after_load(runner)
        venv.set_difficulty(difficulty)
        focus = None
        share = cfg.curriculum.fault_focus if fault_focus is None else fault_focus
        if share > 0 and venv.fault_kinds:
            focus = FaultFocus(len(venv.fault_kinds), share)
            if "fault_focus" in saved:
                focus.load(saved["fault_focus"])
            venv.set_fault_weights(focus.weights())
        steps_per_it = cfg.num_envs * cfg.steps_per_env
        new_file = not csv_path.is_file() or it == 0
        with open(csv_path, "w" if new_file else "a", newline="") as fh:
            writer = csv.writer(fh)
            if new_file:
                writer.writerow(["iteration", "env_steps", "wall_s", "mean_return", "mean_episode_steps",
                                 "fall_rate", "tracking", "episodes", "difficulty", "loss"])
            while it < total_iterations:
                n = min(cfg.checkpoint_every, total_iterations - it)
                mark = len(venv.completed_returns)
                start = time.time()
                runner.learn(num_learning_iterations=n)
                wall += time.time() - start
                it += n
                drawn = focus.weights() if focus is not None else None  # what this block's faults were drawn by
                ret, length, fall_rate, tracking, episodes = _episode_stats(venv, mark, drawn)
                if fixed_difficulty is None and episodes > 0:
                    c = cfg.curriculum
                    if (fall_rate < c.max_fall_rate and length > c.min_episode_fraction * venv.max_episode_length
                            and tracking >= c.min_tracking):
                        difficulty = min(1.0, difficulty + c.step)
                        venv.set_difficulty(difficulty)
                if focus is not None:
                    venv.set_fault_weights(focus.update(venv.completed_fault_kinds[mark:], venv.completed_falls[mark:]))
                loss = _last_loss(runner)
                writer.writerow([it, it * steps_per_it, round(wall, 1), round(ret, 4), round(length, 1),
                                 round(fall_rate, 3), round(tracking, 3), episodes, round(difficulty, 2), round(loss, 5)])
                fh.flush()
                tmp = ckpt_path.with_suffix(".tmp")
                saving = {"alg": runner.alg.save(), "iteration": it, "wall_s": wall, "difficulty": difficulty}
                if focus is not None:
                    saving["fault_focus"] = focus.state()
                torch.save(saving, tmp)
                os.replace(tmp, ckpt_path)
                if keep_every > 0 and it % keep_every == 0:
                    (folder / "kept").mkdir(exist_ok=True)
                    shutil.copyfile(ckpt_path, folder / "kept" / f"it_{it:05d}.pt")
                eta = wall / it * (total_iterations - it) / 60
                episode_stats = (f"return {ret:.3f} | episode {length:.0f} steps | falls {fall_rate:.0%} | "
                                 f"tracking {tracking:.2f}" if episodes else "no episode ended")
                log(f"[{name}] it {it}/{total_iterations} | {it * steps_per_it / 1e6:.2f}M steps | {episode_stats} | "
                    f"difficulty {difficulty:.2f} | {wall / 60:.1f} min, ETA {eta:.1f} min")
        return PhaseResult(iterations=it, env_steps=it * steps_per_it, wall_s=wall, difficulty=difficulty)
    finally:
        torch.set_num_threads(threads)
        venv.close()


def _last_loss(runner) -> float:
    alg = runner.alg
    if hasattr(alg, "student"):
        return float(alg.student.latent_loss.detach())
    return float(getattr(alg, "last_task_loss", float("nan")))


def fit_latent_prior(cfg: TrainConfig, actor_state: dict, difficulty: float, folder: Path):
    """Draw tasks from the final training distribution (faults active) and fit the prior to mu(task)."""
    from metaloco.hardware.robot_config import load_robot
    from metaloco.sim.tasks import Task, TaskSampler, layout_slice, privileged_layout, task_vector

    robot = load_robot(cfg.env.robot)
    sampler = TaskSampler(cfg.env.tasks, robot.joint_names, seed=cfg.seed + 77)
    sampler.difficulty = difficulty
    n = robot.n_joints
    task_dim = sum(s for name, s in privileged_layout(n) if name != "base_lin_vel")
    encoder = LatentEncoder(task_dim, cfg.latent_dim, tuple(cfg.encoder_hidden))
    encoder.load_state_dict({k.removeprefix("encoder."): v for k, v in actor_state.items() if k.startswith("encoder.")})
    push_part = layout_slice("push_force_n", n)
    push = np.zeros(push_part.stop - push_part.start)  # no push
    rows, health = [], []
    for _ in range(cfg.prior_samples):
        task, _ = sampler.sample()
        vec = task_vector(task, robot.joint_names)
        rows.append(np.concatenate([vec, push]))
        locked = vec[layout_slice("joint_locked", n)]
        strength = vec[layout_slice("joint_strength", n)] * task.dynamics.motor_strength
        health.append(np.concatenate([strength * (1 - locked), locked]))
    nominal_vec = np.concatenate([task_vector(Task(), robot.joint_names), push])
    with torch.no_grad():
        z = encoder(torch.as_tensor(np.array(rows), dtype=torch.float32)).numpy()
        z_nominal = encoder(torch.as_tensor(nominal_vec[None], dtype=torch.float32)).numpy()[0]
    prior = fit_prior(z.astype(np.float64), np.array(health), z_nominal.astype(np.float64), robot.joint_names)
    prior.save(folder / "prior.json")
    return prior


def record_numerics(out: Path, log: Callable[[str], None]) -> dict:
    """Write `OUT/numerics.json` (what `numerics.check` finds) and warn where the run will not reproduce:
    numerics that are not pinned, or a resumed run whose kernels differ from those it started with."""
    report = numerics.check()
    path = out / "numerics.json"
    started = json.loads(path.read_text()) if path.is_file() else None
    differ = started is not None and (started["fingerprint"] != report["fingerprint"]
                                      or started.get("layers", report["layers"]) != report["layers"])
    if differ:
        log(f"[numerics] WARNING: this run started with kernels {started['fingerprint']} {started.get('layers', '')} "
            f"(MKL_CBWR={started['mkl_cbwr']}, {started['cpu']}) and resumes with {report['fingerprint']} "
            f"{report['layers']} (MKL_CBWR={report['mkl_cbwr']}, {report['cpu']}): it will not match an "
            "uninterrupted run")
        report["resumed_from"] = started
    warning = numerics.warning(report)
    if warning:
        log(f"[numerics] WARNING: {warning}")
    else:
        log(f"[numerics] MKL_CBWR={report['mkl_cbwr']}, kernels {report['fingerprint']} "
            f"({', '.join(f'{k} {v}' for k, v in report['layers'].items())}; {report['cpu']})")
    path.write_text(json.dumps(report, indent=1))
    return report


def record_commit(out: Path, log: Callable[[str], None]) -> None:
    """Write `OUT/commit.json` when the run starts (the manifest's commit); warn when a resume runs other code."""
    from metaloco.adaptation.export import source_commit

    now, path = source_commit(), out / "commit.json"
    if not path.is_file():
        # What this code does that the card must know and the commit alone does not say: symmetry augmentation
        # leaves unreflected the samples whose reflection has a held-out fault (runs before `SCREENED_SINCE` did not).
        path.write_text(json.dumps({**now, MIRROR_SCREENS_HELD_OUT: True}))
        if now["dirty"]:
            log(f"[commit] WARNING: tracked files differ from commit {now['commit'][:10]}: this run's code is not "
                "the commit's, and the manifest will say so")
        return
    started = json.loads(path.read_text())
    if {key: started.get(key) for key in now} != now:
        log(f"[commit] WARNING: this run started at {started['commit'][:10]} (uncommitted changes: {started['dirty']}) "
            f"and resumes at {now['commit'][:10]} (uncommitted changes: {now['dirty']})")


def _flat(data, prefix: str = "") -> dict:
    if not isinstance(data, dict):
        return {prefix: data}
    return {k: v for key, value in data.items() for k, v in _flat(value, f"{prefix}.{key}" if prefix else key).items()}


def record_config(out: Path, cfg: TrainConfig, log: Callable[[str], None]) -> None:
    """Write the run's settings to `config.yaml`; on a resume, first say which of them differ from the ones the run
    was started (or last resumed) with. Longer phases are a legitimate resume; anything else mixes two runs."""
    path = out / "config.yaml"
    if path.is_file():
        try:  # keys the run's file lacks take their defaults, as they did when it ran
            before = _flat(to_dict(from_dict(TrainConfig, yaml.safe_load(path.read_text()), str(path))))
        except ConfigError as err:
            log(f"[config] WARNING: the run's {path.name} no longer loads ({err}); it is replaced by this preset's")
            before = None
        if before is not None:
            now = _flat(to_dict(cfg))
            changed = [f"{k}: {before[k]} -> {now[k]}" for k in now if k in before and before[k] != now[k]]
            if changed:
                log(f"[config] WARNING: resuming with settings that differ from the run's {path.name}: "
                    + "; ".join(changed))
    path.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def readapt_folder(target: int) -> str:
    """The run-folder path of the re-adaptation after phase 3's iteration `target`."""
    return f"readapt/at_{target:05d}"


def finetune(cfg: TrainConfig, out: Path, difficulty: float, log: Callable[[str], None],
             done: Callable[[str, PhaseResult], None], prior=None) -> None:
    """Phase 3, in the blocks `cfg.finetune_blocks()`, each followed by a re-adaptation of phi when
    `cfg.readapt_iterations` is set; resumes wherever an earlier run stopped."""
    student = torch.load(out / "phase2" / "checkpoint.pt", weights_only=True)["alg"]
    phase1 = torch.load(out / "phase1" / "checkpoint.pt", weights_only=True)["alg"]
    adapter = adapter_state(student["student_state_dict"])
    readapted = []
    blocks = cfg.finetune_blocks()
    for block, target in enumerate(blocks):
        current = adapter  # phi for this block (bound now: the lambdas run inside run_phase)
        if len(blocks) > 1:
            log(f"[phase3] block {block + 1} of {len(blocks)}: to iteration {target}, on "
                + (f"phi re-adapted at iteration {blocks[block - 1]}" if block else "phase 2's phi"))

        def use_current_phi(runner, phi=current) -> None:
            runner.alg.actor.adapter.load_state_dict(phi)  # the checkpoint holds the phi of the block it ended

        r3 = run_phase("phase3", cfg, out, target,
                       lambda v, phi=current: make_finetune_runner(cfg, v, phase1, student, phi, prior),
                       history_length=cfg.history_length, fixed_difficulty=difficulty, log=log,
                       fault_focus=cfg.finetune_fault_focus, seed_offset=SEED_OFFSETS["phase3"] + block,
                       after_load=use_current_phi, first_iteration=blocks[block - 1] if block else 0,
                       env_cfg=cfg.finetune_env(), keep_every=cfg.finetune_keep_every)
        if not cfg.readapt_iterations:
            continue
        tuned = torch.load(out / "phase3" / "checkpoint.pt", weights_only=True)["alg"]["actor_state_dict"]
        name = readapt_folder(target)
        readapted.append(run_phase(
            name, cfg, out, cfg.readapt_iterations,
            lambda v, phi=current: make_readapt_runner(cfg, v, phase1["actor_state_dict"], tuned, phi),
            history_length=cfg.history_length, fixed_difficulty=difficulty, log=log, env_cfg=cfg.adapter_env(),
            seed_offset=SEED_OFFSETS["readapt"] + block))
        adapter = adapter_state(torch.load(out / name / "checkpoint.pt", weights_only=True)["alg"]["student_state_dict"])
    done("phase3", r3)
    if readapted:
        done("readapt", PhaseResult(iterations=sum(r.iterations for r in readapted),
                                    env_steps=sum(r.env_steps for r in readapted),
                                    wall_s=sum(r.wall_s for r in readapted), difficulty=difficulty))


def train(preset: str | TrainConfig, out_dir: str | Path, log: Callable[[str], None] | None = None,
          export: bool = True) -> Path:
    """Run every phase (resuming finished or interrupted ones) and export.

    Args:
        preset: A preset name/path or a loaded `TrainConfig`.
        out_dir: Run folder (`runs/<preset>` by default in the CLI).
        log: Progress sink (default: stderr).
        export: Export the ONNX artifacts when done.

    Returns:
        The run folder.
    """
    numerics.pin()  # before this process's first matrix product: MKL reads its branch once
    cfg = preset if isinstance(preset, TrainConfig) else load_train_config(preset)
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    record_numerics(out, log)
    record_commit(out, log)
    record_config(out, cfg, log)
    state_path = out / "state.json"
    state = json.loads(state_path.read_text()) if state_path.is_file() else {}

    def done(name: str, result: PhaseResult) -> None:
        state[name] = result.__dict__
        state_path.write_text(json.dumps(state, indent=1))

    r1 = run_phase("phase1", cfg, out, cfg.phase1_iterations, lambda v: make_ppo_runner(cfg, v, rma=True), log=log)
    done("phase1", r1)
    teacher = torch.load(out / "phase1" / "checkpoint.pt", weights_only=True)["alg"]["actor_state_dict"]
    if cfg.adapter_replay and (out / "phase2" / "checkpoint.pt").is_file() and "phase2" not in state:
        log("[phase2] WARNING: the replay buffer is not checkpointed; it starts empty on this resume, so phi will "
            "not match an uninterrupted run")
    r2 = run_phase("phase2", cfg, out, cfg.phase2_iterations,
                   lambda v: make_distillation_runner(cfg, v, teacher), history_length=cfg.history_length,
                   fixed_difficulty=r1.difficulty, log=log, env_cfg=cfg.adapter_env())
    done("phase2", r2)
    prior = None
    if cfg.finetune_iterations > 0 and cfg.finetune_latent_feed == "fused":  # phase 3 fuses phi's estimate with it
        prior = fit_latent_prior(cfg, teacher, r1.difficulty, out)
    if cfg.finetune_iterations > 0:
        finetune(cfg, out, r1.difficulty, log, done, prior)
    if cfg.robust_iterations > 0:
        rb = run_phase("robust", cfg, out, cfg.robust_iterations, lambda v: make_ppo_runner(cfg, v, rma=False), log=log)
        done("robust", rb)
    if prior is None:
        prior = fit_latent_prior(cfg, teacher, r1.difficulty, out)
    log(f"[prior] fitted a {prior.dim}-d Gaussian to {prior.samples} training tasks")
    if export:
        from metaloco.adaptation.export import export_run

        export_run(out, out / "export")
        log(f"[export] wrote {out / 'export'}")
    return out
