"""`metaloco export`: a training run's checkpoints -> ONNX artifacts with their metadata.

Writes into a folder:
- `policy.onnx`   inputs `obs` (1, obs_dim) and `latent` (1, latent_dim); output `actions`.
- `adapter.onnx`  input `history` (1, H, obs_dim); output `latent`.
- `encoder.onnx`  input `privileged`; output `latent` (sim only: the `oracle` method).
- `robust.onnx`   input `obs`; output `actions` (the `robust` baseline).
- `prior.json`, `manifest.json`.
The observation normaliser is inside every graph; the metadata (DESIGN.md, "Artifacts")
is everything a node needs to run the policy.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import subprocess
import time
from pathlib import Path

import onnx
import torch
import yaml

import metaloco
from metaloco.adaptation.networks import AdapterGraph, EncoderGraph, PolicyGraph, RobustGraph
from metaloco.adaptation.runtime import BEFORE_PHASE3
from metaloco.adaptation.train import (make_distillation_runner, make_finetune_runner, make_ppo_runner,
                                       readapt_folder)
from metaloco.adaptation.train_config import TrainConfig
from metaloco.hardware.robot_config import load_robot
from metaloco.schema import ConfigError, from_dict
from metaloco.sim.gait import GAIT_OUTPUTS, ActionMap
from metaloco.sim.mirror import MIRROR_SCREENS_HELD_OUT
from metaloco.sim.observation import obs_layout
from metaloco.sim.tasks import privileged_layout

ARTIFACTS = ("policy.onnx", "adapter.onnx", "encoder.onnx", "robust.onnx", "prior.json")


def _export(module: torch.nn.Module, inputs: tuple, names: list[str], output: str, path: Path, meta: dict) -> None:
    module.eval()
    torch.onnx.export(module, inputs, str(path), input_names=names, output_names=[output], opset_version=17,
                      dynamo=False)
    model = onnx.load(str(path))
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key = key
        entry.value = value if isinstance(value, str) else json.dumps(value)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


class _ProbeEnv:
    """The few attributes rsl_rl's constructors read from an env, without starting simulations."""

    def __init__(self, cfg: TrainConfig):
        robot = load_robot(cfg.env.robot)
        n = robot.n_joints
        self.num_envs = 1
        self.num_actions = n + GAIT_OUTPUTS
        self.cfg = cfg.env
        self.device = "cpu"
        obs_dim = sum(s for _, s in obs_layout(n, n + GAIT_OUTPUTS))
        priv_dim = sum(s for _, s in privileged_layout(n))
        from tensordict import TensorDict

        self.obs = TensorDict({"policy": torch.zeros(1, obs_dim), "privileged": torch.zeros(1, priv_dim),
                               "history": torch.zeros(1, cfg.history_length * obs_dim)}, batch_size=[1])
        self.max_episode_length = 1
        self.episode_length_buf = torch.zeros(1, dtype=torch.long)

    def get_observations(self):
        return self.obs


def load_run_config(run: Path) -> TrainConfig:
    path = run / "config.yaml"
    if not path.is_file():
        raise ConfigError(str(path), "", "not a training run folder (config.yaml missing)")
    return from_dict(TrainConfig, yaml.safe_load(path.read_text()), str(path))


def export_run(run: str | Path, out: str | Path) -> Path:
    """Export a finished run's models to ONNX with metadata.

    Args:
        run: The run folder written by `metaloco train`.
        out: Folder for the artifacts (created).

    Returns:
        The artifact folder.
    """
    run, out = Path(run), Path(out)
    cfg = load_run_config(run)
    phases = ("phase1", "phase2", "phase3", "robust") if cfg.finetune_iterations > 0 else ("phase1", "phase2", "robust")
    if cfg.readapt_iterations:
        phases += (readapt_folder(cfg.finetune_iterations),)
    for phase in phases:
        if not (run / phase / "checkpoint.pt").is_file():
            raise ConfigError(str(run / phase), "checkpoint.pt", "missing: that training phase has not run")
    out.mkdir(parents=True, exist_ok=True)
    robot = load_robot(cfg.env.robot)
    n = robot.n_joints
    probe = _ProbeEnv(cfg)
    phase1 = torch.load(run / "phase1" / "checkpoint.pt", weights_only=True)
    ppo = make_ppo_runner(cfg, probe, rma=True)
    ppo.alg.load(phase1["alg"], None, strict=True)
    actor = ppo.alg.get_policy()
    distill = make_distillation_runner(cfg, probe, phase1["alg"]["actor_state_dict"])
    distill.alg.load(torch.load(run / "phase2" / "checkpoint.pt", weights_only=True)["alg"], None, strict=True)
    student = phase2_student = distill.alg.student
    policy = actor
    if cfg.finetune_iterations > 0:  # phase 3 fine-tuned pi on phi's estimate: that pi is the one shipped
        # the runner only gives the checkpoint its layout: what pi was fed in training (finetune_latent_feed) is
        # not part of it, and the fused feed would need the environments' time step, which the probe lacks
        layout = dataclasses.replace(cfg, finetune_latent_feed="raw")
        finetune = make_finetune_runner(layout, probe, phase1["alg"], distill.alg.save())
        finetune.alg.load(torch.load(run / "phase3" / "checkpoint.pt", weights_only=True)["alg"], None, strict=True)
        policy = finetune.alg.get_policy()
    if cfg.readapt_iterations:  # and phi re-adapted to it: that phi is the one shipped
        saved = torch.load(run / readapt_folder(cfg.finetune_iterations) / "checkpoint.pt", weights_only=True)
        readapt = make_distillation_runner(cfg, probe, saved["alg"]["teacher_state_dict"])
        readapt.alg.load(saved["alg"], None, strict=True)
        student = readapt.alg.student
    robust = make_ppo_runner(cfg, probe, rma=False)
    robust.alg.load(torch.load(run / "robust" / "checkpoint.pt", weights_only=True)["alg"], None, strict=True)

    action_map = ActionMap.from_robot(robot)
    obs_dim = probe.obs["policy"].shape[1]
    meta = {
        "robot": robot.name, "joint_names": robot.joint_names, "default_joint_pos": robot.default_joint_pos,
        "action_scale": robot.action_scale, "kp": robot.kp, "kd": robot.kd, "torque_limits": robot.torque_limits,
        "control_dt": robot.control_dt, "obs_layout": [list(x) for x in obs_layout(n, n + GAIT_OUTPUTS)],
        "latent_dim": cfg.latent_dim, "history_length": cfg.history_length, "gait": action_map.to_metadata(),
        "metaloco_version": metaloco.__version__,
    }
    obs = torch.zeros(1, obs_dim)
    latent = torch.zeros(1, cfg.latent_dim)
    fine_tuned = policy is not actor
    _export(PolicyGraph(policy), (obs, latent), ["obs", "latent"], "actions", out / "policy.onnx",
            {**meta, "method": "adaptive: pi(obs, latent), fine-tuned on the adapter's estimate" if fine_tuned
             else "adaptive/nominal/oracle: pi(obs, latent)", "latent_input": "adapter" if fine_tuned else "any"})
    _export(AdapterGraph(student), (torch.zeros(1, cfg.history_length, obs_dim),), ["history"], "latent",
            out / "adapter.onnx", {**meta, "method": "phi(history) -> latent (oldest first, zeros before start)"})
    _export(EncoderGraph(actor), (probe.obs["privileged"],), ["privileged"], "latent", out / "encoder.onnx",
            {**meta, "privileged_layout": [list(x) for x in privileged_layout(n)]})
    _export(RobustGraph(robust.alg.get_policy()), (obs,), ["obs"], "actions", out / "robust.onnx",
            {**meta, "latent_dim": 0, "method": "robust: pi(obs), domain randomisation only"})
    shutil.copy(run / "prior.json", out / "prior.json")
    if fine_tuned:
        before = out / BEFORE_PHASE3
        before.mkdir(exist_ok=True)
        _export(PolicyGraph(actor), (obs, latent), ["obs", "latent"], "actions", before / "policy.onnx",
                {**meta, "method": "phase-1 pi(obs, latent), before phase 3", "latent_input": "any"})
        for name in ARTIFACTS:
            if name != "policy.onnx" and not (cfg.readapt_iterations and name == "adapter.onnx"):
                shutil.copy(out / name, before / name)
        if cfg.readapt_iterations:  # phase 1's pi with the phi distilled on it
            _export(AdapterGraph(phase2_student), (torch.zeros(1, cfg.history_length, obs_dim),), ["history"],
                    "latent", before / "adapter.onnx",
                    {**meta, "method": "phase-2 phi(history) -> latent, before phase 3 and its re-adaptation"})
    write_manifest(run, out, command=f"metaloco export {run} --out {out}")
    return out


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def source_commit(exclude: Path | None = None) -> dict:
    """The git commit of this source tree, and whether tracked files differ from it (`commit`, `dirty`).

    Args:
        exclude: A folder whose changes do not count (the model folder a card is being written into: shipping
            rewrites its manifest, which says nothing about the code that measures it).
    """
    here = Path(__file__).parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                                cwd=here).stdout.strip()
        top = Path(subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True,
                                  check=True, cwd=here).stdout.strip())
        changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                 text=True, check=True, cwd=here).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return {"commit": "unknown", "dirty": None}
    if exclude is not None:
        skip = Path(exclude).resolve()
        # porcelain lines are "XY path" (or "XY old -> new"), paths relative to the repository's top
        changed = [line for line in changed if not (top / line[3:].split(" -> ")[-1]).resolve().is_relative_to(skip)]
    return {"commit": commit, "dirty": bool(changed)}


def write_manifest(run: Path, out: Path, command: str) -> dict:
    """manifest.json: sha256 of each artifact, the training command, commit, wall time, steps."""
    state = json.loads((run / "state.json").read_text()) if (run / "state.json").is_file() else {}
    started = run / "commit.json"  # written when training started; older runs lack it
    commit = json.loads(started.read_text()) if started.is_file() else source_commit()
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    manifest = {
        "files": {name: sha256(out / name) for name in ARTIFACTS + (f"{BEFORE_PHASE3}/policy.onnx",)
                  if (out / name).is_file()},
        "command": command,
        "preset": cfg.get("name"),
        "commit": commit["commit"],
        "uncommitted_changes": commit["dirty"],
        MIRROR_SCREENS_HELD_OUT: bool(commit.get(MIRROR_SCREENS_HELD_OUT, False)),
        "phases": state,
        "numerics": (json.loads((run / "numerics.json").read_text()) if (run / "numerics.json").is_file()
                     else None),
        "wall_s": round(sum(p.get("wall_s", 0.0) for p in state.values()), 1),
        "env_steps": sum(p.get("env_steps", 0) for p in state.values()),
        "exported_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "metaloco_version": metaloco.__version__,
        "config": cfg,  # the training config: `metaloco card` re-evaluates the models without the run folder
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def ship(run: str | Path, dest: str | Path, command: str) -> Path:
    """Copy a run's exported artifacts into `dest` (e.g. models/a1), record the command that made them, and write
    the model card (which evaluates every method on every scenario)."""
    run, dest = Path(run), Path(dest)
    src = run / "export"
    dest.mkdir(parents=True, exist_ok=True)
    for name in ARTIFACTS:
        shutil.copy(src / name, dest / name)
    if (src / BEFORE_PHASE3).is_dir():
        shutil.copytree(src / BEFORE_PHASE3, dest / BEFORE_PHASE3, dirs_exist_ok=True)
    else:
        shutil.rmtree(dest / BEFORE_PHASE3, ignore_errors=True)
    write_manifest(run, dest, command=command)
    from metaloco.adaptation.model_card import write_model_card

    write_model_card(run, dest, command=command)
    return dest
