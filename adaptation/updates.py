"""What metaloco changes in rsl_rl's updates. Each function wraps `alg.update` of an rsl_rl algorithm instance
(`feed_fused_estimate` also its `act` and `process_env_step`).

- `add_task_loss`: phase 1 also fits mu and a task decoder, so that z keeps the task (the fault) in it.
- `add_replay`: phase 2 as DAgger with aggregation (Ross et al. 2011): phi learns from a `ReplayBuffer` of
  the student's rollouts instead of the newest one alone.
- `feed_fused_estimate`: phase 3 feeds pi what the adaptation node would (`finetune_latent_feed: fused`), with
  `FusedFeed`, the estimator's fusion with the prior batched over the environments.
- `reuse_frozen_estimate`: phase 3 computes the frozen phi's estimate once per update.
- `skip_mirror_diagnostic`: no second actor pass for rsl_rl's symmetry report.
- `rollouts_on_one_thread`: rollouts on one torch thread, the update on all.

The last three change no trained number (tests/adaptation/test_train_threads.py); the first three are training
choices of the preset (`task_loss_weight`, `adapter_replay`, `finetune_latent_feed`).
"""

from __future__ import annotations

import numpy as np
import torch

from metaloco.adaptation.estimator import LatentEstimator, refresh_due
from metaloco.adaptation.networks import FROZEN_ESTIMATE
from metaloco.adaptation.train_config import TrainConfig


def task_scale(cfg: TrainConfig, samples: int = 2000) -> torch.Tensor:
    """Mean and spread of each task-vector part over the full family (2, dim): the auxiliary loss's units.

    Parts that never vary in training (pushes, held-out settings) get a floor so they neither blow up nor vanish.
    """
    from metaloco.hardware.robot_config import load_robot
    from metaloco.sim.tasks import TaskSampler, layout_slice, task_vector

    robot = load_robot(cfg.env.robot)
    sampler = TaskSampler(cfg.env.tasks, robot.joint_names, seed=cfg.seed + 99)
    rows = np.array([task_vector(sampler.sample()[0], robot.joint_names) for _ in range(samples)])
    push = layout_slice("push_force_n", robot.n_joints)  # after the task in mu's input; never drawn in training
    n_push = push.stop - push.start
    mean = np.concatenate([rows.mean(axis=0), np.zeros(n_push)])
    scale = np.concatenate([np.maximum(rows.std(axis=0), 0.05), np.full(n_push, 100.0)])  # push force: 100 N
    return torch.as_tensor(np.stack([mean, scale]), dtype=torch.float32)


def add_task_loss(alg, cfg: TrainConfig) -> None:
    """After each PPO update, fit mu and the task decoder so that z can be read back as the task.

    RMA shapes z by the policy gradient alone; on this machine's budget that leaves z nearly blind to a
    failed joint (a locked knee moved it by 0.02). This keeps the fault in z, so the policy can act on it and
    the adapter has something to estimate. A separate Adam, the same mini-batches as PPO's epochs.
    """
    actor, weight, units = alg.actor, cfg.task_loss_weight, task_scale(cfg)
    params = list(actor.encoder.parameters()) + list(actor.task_decoder.parameters())
    optimizer = torch.optim.Adam(params, lr=cfg.ppo.learning_rate)
    ppo_update = alg.update

    def update() -> dict[str, float]:
        privileged = alg.storage.observations["privileged"].flatten(0, 1).clone()
        stats = ppo_update()
        losses = []
        for _ in range(cfg.ppo.num_learning_epochs):
            for idx in torch.randperm(len(privileged)).chunk(cfg.ppo.num_mini_batches):
                loss = weight * actor.task_reconstruction_loss(privileged[idx], units)
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                losses.append(loss.item())
        alg.last_task_loss = float(np.mean(losses))
        return {**stats, "task": alg.last_task_loss}

    alg.update = update


def skip_mirror_diagnostic(alg) -> None:
    """Stop rsl_rl's symmetry extension from running the actor a second time on every mini-batch.

    With `use_mirror_loss` off (as here: the mirrored samples are data, not a loss), rsl_rl still evaluates the
    actor on the whole augmented mini-batch again, only to report how asymmetric the policy is (the "symmetry"
    entry of the update's losses). Nothing here reads that figure; that pass took 40% of a phase-3 update. The
    entry reads NaN instead. The pass computes nothing the update uses, so no trained number changes
    (tests/adaptation/test_train_threads.py).
    """
    if alg.symmetry is not None and not alg.symmetry.use_mirror_loss:
        alg.symmetry.compute_loss = lambda actor, batch, original_batch_size: torch.tensor(float("nan"))


def reuse_frozen_estimate(alg) -> None:
    """Phase 3: compute z_hat = phi(history) once per update instead of in every epoch and mini-batch.

    phi is frozen in phase 3, so each sample's z_hat (and its mirror image's) is the same in all of PPO's 5 epochs;
    recomputing it there was most of the update (the 1-D convolutions over 50 steps of history). Before rsl_rl's
    update, this puts z_hat of every stored sample into the storage as the `FROZEN_ESTIMATE` group, with phi of
    the mirrored history beside it when the update mirrors (`rsl_rl_augmentation` swaps the two); the actor reads
    it there. The trained numbers are the same to the bit at the `full` preset's shapes (tests/adaptation/
    test_train_threads.py; and the whole of `full`'s phases 1-3, models/a1/HISTORY.md, session 15). Session 13 saw
    an activation's last bits depend on the batch's size, so a preset with other shapes should be checked the same
    way before it is called the same run.
    """
    from tensordict import TensorDict

    storage, actor, update = alg.storage, alg.actor, alg.update

    def update_on_cached_estimate() -> dict[str, float]:
        obs = storage.observations
        history = obs["history"].flatten(0, 1)
        # privileged: which samples the augmentation leaves unreflected (their reflection has a held-out fault)
        seen = TensorDict({"history": history, "privileged": obs["privileged"].flatten(0, 1)},
                          batch_size=[len(history)])
        with torch.no_grad():
            if alg.symmetry is not None:
                seen, _ = alg.symmetry.data_augmentation_func(obs=seen)
                z_hat = torch.cat(actor.estimate(seen).chunk(2), dim=-1)  # (phi(h), phi(mirrored h))
            else:
                z_hat = actor.estimate(seen)
        obs[FROZEN_ESTIMATE] = z_hat.view(*obs.batch_size, -1)
        try:
            return update()
        finally:
            del obs[FROZEN_ESTIMATE]  # the next rollout's observations come without it

    alg.update = update_on_cached_estimate


class FusedFeed:
    """`estimator.LatentEstimator.update` for every environment at once, refreshed as `MethodPolicy` does.

    Each row of `z_raw` (environments x `width` filters x latent) is clamped to the prior's gate, compared with its
    filter's state (a jump beyond the change threshold restarts the filter from it) and smoothed with the same time
    constant; an environment refreshes on the first step of its episode and every `every`-th step after, and holds
    its latent in between. Numbers in float64, as the numpy estimator's. Rows are independent: `width` 2 runs a
    second filter on the mirrored histories for rsl_rl's symmetry augmentation.
    """

    def __init__(self, prior, n_envs: int, every: int, dt: float, width: int = 1):
        reference = LatentEstimator(prior)
        self.mean = torch.as_tensor(prior.mean, dtype=torch.float64)
        self.precision = torch.as_tensor(prior.precision, dtype=torch.float64)
        self.gate = float(reference.gate)
        self.threshold = float(reference.change_threshold)
        self.alpha = 1.0 - float(np.exp(-every * dt / reference.tau_s))
        self.every = every
        self.state = self.mean.repeat(n_envs, width, 1)
        self.steps = torch.zeros(n_envs, dtype=torch.long)
        self.started = torch.zeros(n_envs, 1, 1, dtype=torch.bool)
        self.rollout: list[torch.Tensor] = []
        """The latents pi was fed at each step of the current rollout (`feed_fused_estimate` fills and empties it)."""

    def reset(self, done: torch.Tensor) -> None:
        """Start the filters of the environments whose episode ended afresh (`done`: one flag per environment)."""
        done = done.view(-1).bool()
        self.state[done] = self.mean
        self.steps[done] = 0
        self.started[done] = False

    def _d2(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("...i,ij,...j->...", x, self.precision, x)

    def step(self, z_raw: torch.Tensor) -> torch.Tensor:
        """One control step with phi's raw estimates (n_envs, width, latent); returns the latents pi is fed."""
        self.steps += 1
        due = refresh_due(self.steps, self.every).view(-1, 1, 1)
        z_raw = z_raw.to(torch.float64)
        d2 = self._d2(z_raw - self.mean).unsqueeze(-1)
        scale = torch.where(d2 > self.gate, torch.sqrt(self.gate / d2), torch.ones_like(d2))
        z = torch.where(torch.isfinite(d2), self.mean + (z_raw - self.mean) * scale, self.state)
        diff = z - self.state
        change = self.started & (torch.sqrt(self._d2(diff).clamp(min=0.0)).unsqueeze(-1) > self.threshold)
        fused = torch.where(~self.started | change, z, self.state + self.alpha * diff)
        self.state = torch.where(due, fused, self.state)
        self.started = self.started | due
        return self.state.clone()


def feed_fused_estimate(alg, feed: FusedFeed) -> None:
    """Phase 3 on the fused estimate: in the rollout pi acts on `feed`'s latents, and the update reads the same
    latents back (in place of `reuse_frozen_estimate`'s phi(history)), so each sample's action and its log-prob
    in the update come from one latent. With symmetry augmentation the feed runs a second filter on phi of the
    mirrored histories, laid beside the first as `rsl_rl_augmentation` expects its `FROZEN_ESTIMATE` pair.
    """
    from tensordict import TensorDict

    actor, act, process_env_step, update = alg.actor, alg.act, alg.process_env_step, alg.update
    fed = feed.rollout

    def act_on_fused(obs):
        seen = TensorDict({"history": obs["history"], "privileged": obs["privileged"]}, batch_size=obs.batch_size)
        with torch.no_grad():
            if alg.symmetry is not None:
                seen, _ = alg.symmetry.data_augmentation_func(obs=seen)
                z_raw = torch.stack(actor.estimate(seen).chunk(2), dim=1)  # (envs, 2, latent): phi(h), phi(mirrored h)
            else:
                z_raw = actor.estimate(seen).unsqueeze(1)
        latent = feed.step(z_raw).to(obs["history"].dtype).flatten(1)
        fed.append(latent)
        with_latent = obs.copy()
        with_latent[FROZEN_ESTIMATE] = latent
        actions = act(with_latent)
        alg.transition.observations = obs  # the storage holds the env's groups; the latent waits in feed.rollout
        return actions

    def process_and_reset(obs, rewards, dones, extras):
        process_env_step(obs, rewards, dones, extras)
        feed.reset(dones)

    def update_on_fed_latents() -> dict[str, float]:
        obs = alg.storage.observations
        obs[FROZEN_ESTIMATE] = torch.stack(fed)
        try:
            return update()
        finally:
            del obs[FROZEN_ESTIMATE]
            fed.clear()

    alg.act, alg.process_env_step, alg.update = act_on_fused, process_and_reset, update_on_fed_latents


class ReplayBuffer:
    """DAgger's aggregate dataset: the student's rollouts, every `stride`-th step, the newest `capacity` samples.

    Rows are the observation groups phi and its loss read (`policy`, `history`, `privileged`) and the teacher's
    action, flattened side by side; the oldest rows are overwritten first.
    """

    def __init__(self, capacity: int, widths: dict[str, int]):
        self.capacity = capacity
        self.widths = widths
        self.data = torch.empty(capacity, sum(widths.values()))
        self.size = 0
        self.next = 0

    def add(self, rows: dict[str, torch.Tensor]) -> None:
        block = torch.cat([rows[k].reshape(-1, w) for k, w in self.widths.items()], dim=1)
        block = block[-self.capacity:]  # a block larger than the buffer keeps its newest rows
        head = min(len(block), self.capacity - self.next)
        self.data[self.next:self.next + head] = block[:head]
        self.data[:len(block) - head] = block[head:]
        self.next = (self.next + len(block)) % self.capacity
        self.size = min(self.capacity, self.size + len(block))

    def sample(self, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        rows = self.data[torch.randint(self.size, (n,), generator=generator)]
        return dict(zip(self.widths, rows.split(list(self.widths.values()), dim=1)))


def add_replay(alg, cfg: TrainConfig) -> None:
    """Replace rsl_rl's Distillation update (every epoch over the newest rollout) by DAgger with aggregation.

    Each rollout (the student acting, the teacher labelling) goes into a `ReplayBuffer` of the last
    `adapter_replay` rollouts; phi then takes adapter_epochs x (rollout samples) / adapter_batch Adam steps, each on
    a mini-batch drawn from the whole buffer. Many steps on one rollout fit its ~num_envs tasks and forget the
    rest (measured, session 10); drawn from hundreds of tasks, the same steps must learn what is common to them.
    The loss is the one rsl_rl's update uses (`alg.loss_fn`: action MSE + weighted ||z_hat - z||^2).
    """
    from tensordict import TensorDict

    storage, student, stride = alg.storage, alg.student, cfg.adapter_replay_stride
    per_rollout = len(range(0, cfg.steps_per_env, stride)) * storage.num_envs
    groups = ("policy", "history", "privileged")
    widths = {k: storage.observations[k].shape[-1] for k in groups}
    widths["teacher_actions"] = storage.privileged_actions.shape[-1]
    buffer = ReplayBuffer(cfg.adapter_replay * per_rollout, widths)
    steps = max(1, cfg.adapter_epochs * cfg.steps_per_env * storage.num_envs // cfg.adapter_batch)
    rng = torch.Generator().manual_seed(cfg.seed + 4)
    params = list(student.adapter.parameters())

    def update() -> dict[str, float]:
        obs = storage.observations[::stride]
        buffer.add({**{k: obs[k] for k in groups}, "teacher_actions": storage.privileged_actions[::stride]})
        losses = []
        for _ in range(steps):
            batch = buffer.sample(cfg.adapter_batch, rng)
            seen = TensorDict({k: batch[k] for k in groups}, batch_size=[cfg.adapter_batch])
            loss = alg.loss_fn(student(seen), batch["teacher_actions"])
            alg.optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            alg.optimizer.step()
            losses.append(loss.item())
        storage.clear()
        alg.replay_size = buffer.size
        return {"behavior": float(np.mean(losses))}

    alg.update = update


def rollouts_on_one_thread(alg, threads: int) -> None:
    """Run the learner's rollouts on one torch thread and only `alg.update` on `threads`.

    While the workers step the simulation, the learner waits for them; after each of its 2-thread matrix
    products, OpenMP keeps the idle thread spinning (libgomp's default spin), which takes a core from a
    worker. Measured on the `full` preset (AMD EPYC, 2 cores): the workers step 1000 envs/s with the
    policy's forward pass between steps and 1370 without it. A rollout's products are a few rows wide, so
    one thread loses nothing there; the numbers are the same, to the bit, with 1 or 2 threads (MKL_CBWR,
    see numerics.py; checked by tests/adaptation/test_train_threads.py).
    """
    update = alg.update

    def update_on_all_threads(*args, **kwargs):
        torch.set_num_threads(threads)
        try:
            return update(*args, **kwargs)
        finally:
            torch.set_num_threads(1)

    alg.update = update_on_all_threads
    torch.set_num_threads(1)
