"""The loop of one `SubprocVecEnv` worker process: it owns a slice of the envs and answers the learner's requests.

A module of its own, importing neither torch nor rsl_rl: a spawned worker imports only the module of its target,
and vec_env.py's imports (torch, tensordict, rsl_rl) took 3.3 s of each worker's start-up, for nothing it uses.
"""

from __future__ import annotations

import traceback
from multiprocessing.connection import Connection

import numpy as np

from metaloco.sim.env import EnvConfig, LocomotionEnv


def serve(conn: Connection, cfg: EnvConfig, seeds: list[int]) -> None:
    """Worker loop: owns `len(seeds)` envs and answers step/reset requests."""
    try:
        envs = [LocomotionEnv(cfg, seed=s) for s in seeds]
        returns = np.zeros(len(envs))
        tracking = np.zeros(len(envs))
        lengths = np.zeros(len(envs), dtype=np.int64)
        while True:
            cmd, arg = conn.recv()
            if cmd == "reset":
                out = [env.reset() for env in envs]
                conn.send((np.stack([o for o, _ in out]), np.stack([i["privileged"] for _, i in out])))
            elif cmd == "step":
                obs, priv = [], []
                rew = np.zeros(len(envs), np.float32)
                fell = np.zeros(len(envs), bool)
                timeout = np.zeros(len(envs), bool)
                finished = []
                for k, env in enumerate(envs):
                    o, r, term, trunc, info = env.step(arg[k])
                    returns[k] += r
                    lengths[k] += 1
                    tracking[k] += info["tracking"]
                    if term or trunc:
                        finished.append((returns[k], lengths[k], term, tracking[k] / lengths[k], env.fault_kind))
                        returns[k], lengths[k], tracking[k] = 0.0, 0, 0.0
                        o, info = env.reset()
                    obs.append(o)
                    priv.append(info["privileged"])
                    rew[k], fell[k], timeout[k] = r, term, trunc
                conn.send((np.stack(obs), np.stack(priv), rew, fell, timeout, finished))
            elif cmd == "difficulty":
                for env in envs:
                    env.set_difficulty(arg)
                conn.send(None)
            elif cmd == "fault_weights":
                for env in envs:
                    env.set_fault_weights(arg)
                conn.send(None)
            elif cmd == "stats":
                conn.send((sum(e.robot.physics_steps for e in envs), sum(e.robot.physics_wall_s for e in envs)))
            elif cmd == "close":
                for env in envs:
                    env.close()
                conn.send(None)
                return
            else:
                raise ValueError(f"unknown worker command {cmd!r}")
    except Exception:  # report the worker's failure to the learner instead of hanging it
        conn.send(("error", traceback.format_exc()))
