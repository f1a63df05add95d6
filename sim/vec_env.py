"""Many LocomotionEnvs stepped in worker processes, behind rsl_rl's `VecEnv` interface.

Each worker process owns a slice of the envs and steps them in turn; all workers run
at once, so two workers use both cores. Observations come back as a TensorDict with
the groups `policy` and `privileged` (rsl-rl-lib's observation groups). Envs reset
themselves when an episode ends; the returned observation is then the new episode's
first, and `extras["time_outs"]` tells time limits from falls.
"""

from __future__ import annotations

import multiprocessing as mp

import numpy as np
import torch
from rsl_rl.env import VecEnv
from tensordict import TensorDict

from metaloco.sim.env import EnvConfig, LocomotionEnv
from metaloco.sim.env_worker import serve


class SubprocVecEnv(VecEnv):
    """`num_envs` LocomotionEnvs in `workers` processes.

    Args:
        cfg: Env configuration (shared by all envs).
        num_envs: Total number of envs.
        workers: Worker processes (1 per core is the sweet spot).
        seed: Base seed; env i gets seed + i.
        device: Torch device of returned tensors.
        history_length: If > 0, also return the group `history`: the last `history_length` observations,
            oldest first, flattened; zeros before the episode's first step (as on the robot at start-up).
    """

    def __init__(self, cfg: EnvConfig, num_envs: int, workers: int = 2, seed: int = 0, device: str = "cpu",
                 history_length: int = 0):
        if num_envs < 1 or workers < 1:
            raise ValueError(f"num_envs and workers must be >= 1, got {num_envs} and {workers}")
        workers = min(workers, num_envs)
        self.cfg = cfg
        self.num_envs = num_envs
        self.device = device
        probe = LocomotionEnv(cfg, seed=seed)
        self.num_actions = probe.n_actions
        self.num_obs = probe.observation_space.shape[0]
        self.num_privileged = probe.priv_dim
        self.obs_layout = probe.obs_layout
        self.robot_cfg = probe.robot_cfg
        self.max_episode_length = probe.max_steps
        self.dt = probe.dt
        probe.close()
        self.episode_length_buf = torch.zeros(num_envs, dtype=torch.long)
        ctx = mp.get_context("spawn")
        bounds = np.linspace(0, num_envs, workers + 1).astype(int)
        self._slices = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
        self._conns, self._procs = [], []
        for s in self._slices:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=serve, args=(child, cfg, list(range(seed + s.start, seed + s.stop))),
                               daemon=True)
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)
        self.completed_returns: list[float] = []
        self.completed_lengths: list[int] = []
        self.completed_falls: list[bool] = []
        self.completed_tracking: list[float] = []
        """Per finished episode: mean of exp(-|v_cmd_xy - v_xy|^2 / sigma) over its steps (1 = perfect)."""
        self.completed_fault_kinds: list[int] = []
        """Per finished episode: its fault as an index in `fault_kinds` (-1: none)."""
        self.fault_kinds = probe.sampler.fault_kinds
        self.history_length = history_length
        self._obs, self._priv = self._gather("reset", [None] * len(self._conns))
        self._history = torch.zeros(num_envs, max(history_length, 1), self.num_obs)
        self._history[:, -1] = self._obs

    def _gather(self, cmd: str, args: list) -> tuple:
        for conn, arg in zip(self._conns, args):
            conn.send((cmd, arg))
        replies = [conn.recv() for conn in self._conns]
        for reply in replies:
            if isinstance(reply, tuple) and len(reply) == 2 and isinstance(reply[0], str) and reply[0] == "error":
                raise RuntimeError(f"a simulation worker failed:\n{reply[1]}")
        if cmd == "reset":
            return (torch.from_numpy(np.concatenate([r[0] for r in replies])),
                    torch.from_numpy(np.concatenate([r[1] for r in replies])))
        return replies

    def get_observations(self) -> TensorDict:
        groups = {"policy": self._obs.to(self.device), "privileged": self._priv.to(self.device)}
        if self.history_length > 0:
            groups["history"] = self._history.flatten(1).to(self.device)
        return TensorDict(groups, batch_size=[self.num_envs], device=self.device)

    def step(self, actions: torch.Tensor) -> tuple[TensorDict, torch.Tensor, torch.Tensor, dict]:
        acts = actions.detach().cpu().numpy().astype(np.float64)
        replies = self._gather("step", [acts[s] for s in self._slices])
        self._obs = torch.from_numpy(np.concatenate([r[0] for r in replies]))
        self._priv = torch.from_numpy(np.concatenate([r[1] for r in replies]))
        rew = torch.from_numpy(np.concatenate([r[2] for r in replies]))
        fell = np.concatenate([r[3] for r in replies])
        timeout = np.concatenate([r[4] for r in replies])
        done = fell | timeout
        if self.history_length > 0:
            self._history = torch.roll(self._history, -1, dims=1)
            self._history[torch.from_numpy(done)] = 0.0
            self._history[:, -1] = self._obs
        for r in replies:
            for ret, length, f, track, kind in r[5]:
                self.completed_fault_kinds.append(int(kind))
                self.completed_returns.append(float(ret))
                self.completed_lengths.append(int(length))
                self.completed_falls.append(bool(f))
                self.completed_tracking.append(float(track))
        self.episode_length_buf += 1
        self.episode_length_buf[torch.from_numpy(done)] = 0
        extras = {"time_outs": torch.from_numpy(timeout).to(self.device), "log": {}}
        return self.get_observations(), rew.to(self.device), torch.from_numpy(done).to(self.device), extras

    def set_difficulty(self, level: float) -> None:
        """Curriculum level for tasks drawn at later resets (all envs)."""
        self._gather("difficulty", [level] * len(self._conns))

    def set_fault_weights(self, weights: np.ndarray | None) -> None:
        """Probabilities over `fault_kinds` for faults drawn at later resets (all envs; None: uniform)."""
        self._gather("fault_weights", [weights] * len(self._conns))

    def physics_stats(self) -> tuple[int, float]:
        """Physics steps taken so far and wall time spent inside pybullet's stepSimulation, over all workers."""
        replies = self._gather("stats", [None] * len(self._conns))
        return sum(r[0] for r in replies), sum(r[1] for r in replies)

    def close(self) -> None:
        for conn in self._conns:
            try:
                conn.send(("close", None))
                conn.recv()
            except (EOFError, BrokenPipeError, OSError):
                pass
        for proc in self._procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()

    def __enter__(self) -> SubprocVecEnv:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
