"""The auxiliary task loss of phase 1 puts the failed joint into z (and the smoke run logs it)."""

import csv
import math

import numpy as np
import torch
from tensordict import TensorDict

from metaloco.adaptation.networks import RMAActor
from metaloco.adaptation.updates import task_scale
from metaloco.adaptation.train_config import load_train_config
from metaloco.hardware.robot_config import load_robot
from metaloco.sim.tasks import JointFault, Task, TaskSampler, layout_slice, task_vector


def _privileged(tasks, joints):
    return torch.as_tensor(np.array([np.concatenate([task_vector(t, joints), np.zeros(6)]) for t in tasks]),
                           dtype=torch.float32)


def test_the_task_loss_teaches_z_which_joint_is_locked():
    cfg = load_train_config("smoke")
    # Only which of 8 joints is locked varies: 8 classes fit a linear read-out of an 8-d z exactly (the full
    # family holds more than 8 dims carry exactly; there the loss keeps what it can).
    r = cfg.env.tasks
    r.terrain_types, r.friction, r.payload_kg, r.com_offset_m = ["flat"], [0.8, 0.8], [0.0, 0.0], 0.0
    r.motor_strength, r.latency_ms = [1.0, 1.0], [0.0, 0.0]
    r.faults.probability, r.faults.modes = 1.0, ["locked"]
    r.faults.joints = [f"{leg}_{part}_joint" for leg in ("FR", "RR", "RL", "FL") for part in ("upper", "lower")]
    joints = load_robot(cfg.env.robot).joint_names
    units = task_scale(cfg, samples=500)
    sampler = TaskSampler(cfg.env.tasks, joints, seed=3)
    tasks = [sampler.sample()[0] for _ in range(1000)]
    priv = _privileged(tasks, joints)
    obs = TensorDict({"policy": torch.zeros(len(tasks), 50), "privileged": priv}, batch_size=[len(tasks)])
    torch.manual_seed(0)
    actor = RMAActor(obs, {}, "actor", 15, latent_dim=8, encoder_hidden=(64, 32), hidden_dims=[32],
                     activation="elu", obs_normalization=True)
    optimizer = torch.optim.Adam(list(actor.encoder.parameters()) + list(actor.task_decoder.parameters()), lr=3e-3)
    first = float(actor.task_reconstruction_loss(priv, units))
    for _ in range(600):
        loss = actor.task_reconstruction_loss(priv, units)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert float(loss) < 0.5 * first, (first, float(loss))
    # Read back which joint is locked for each training joint (FL_lower_joint is held out).
    where = layout_slice("joint_locked", len(joints))
    for name in sampler.fault_joints:
        task = Task(faults={name: JointFault(mode="locked")})
        with torch.no_grad():
            decoded = actor.task_decoder(actor.encoder(_privileged([task], joints)[:, :-3]))[0]
        locked = decoded[where]
        assert joints[int(locked.argmax())] == name, (name, locked)


def _identified(actor, units, joints, kinds):
    """How many fault kinds (joint, mode) are closest, among all kinds, to their own decoded task."""
    tasks = [Task(faults={name: JointFault(mode=mode)}) for name, mode in kinds]
    priv = _privileged(tasks, joints)[:, :-3]
    with torch.no_grad():
        decoded = actor.task_decoder(actor.encoder(priv))
    target = (priv - units[0]) / units[1]
    return int((torch.cdist(decoded, target).argmin(dim=1) == torch.arange(len(kinds))).sum())


def test_a_nonlinear_task_decoder_lets_8_dims_carry_more_fault_kinds_than_a_linear_one():
    # 22 kinds (11 joints, locked or limp) in an 8-d z: a linear read-out keeps at most 8 directions and
    # confuses about half of them; one hidden layer tells every kind apart.
    cfg = load_train_config("smoke")
    r = cfg.env.tasks
    r.terrain_types, r.friction, r.payload_kg, r.com_offset_m = ["flat"], [0.8, 0.8], [0.0, 0.0], 0.0
    r.motor_strength, r.latency_ms = [1.0, 1.0], [0.0, 0.0]
    r.faults.probability, r.faults.modes = 1.0, ["locked", "limp"]
    joints = load_robot(cfg.env.robot).joint_names
    units = task_scale(cfg, samples=500)
    sampler = TaskSampler(cfg.env.tasks, joints, seed=3)
    kinds = [(name, mode) for name in sampler.fault_joints for mode in ("locked", "limp")]
    priv = _privileged([Task(faults={n: JointFault(mode=m)}) for n, m in kinds] * 20, joints)
    obs = TensorDict({"policy": torch.zeros(len(priv), 50), "privileged": priv}, batch_size=[len(priv)])
    found = {}
    for hidden in ((), (64,)):
        torch.manual_seed(0)
        actor = RMAActor(obs, {}, "actor", 15, latent_dim=8, encoder_hidden=(64, 32), hidden_dims=[32],
                         activation="elu", obs_normalization=True, task_decoder_hidden=hidden)
        optimizer = torch.optim.Adam(list(actor.encoder.parameters()) + list(actor.task_decoder.parameters()), lr=3e-3)
        for _ in range(400):
            loss = actor.task_reconstruction_loss(priv, units)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        found[hidden] = _identified(actor, units, joints, kinds)
    assert found[(64,)] == len(kinds) and found[()] <= 16, found


def test_the_smoke_run_logs_the_task_loss(smoke_run):
    rows = list(csv.DictReader((smoke_run / "phase1" / "progress.csv").open()))
    assert all(math.isfinite(float(r["loss"])) and float(r["loss"]) > 0 for r in rows)
