"""The shipped A1 models (models/a1/) load, match their manifest, and the adapter tracks a fault."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from metaloco.adaptation.evaluate import MethodPolicy
from metaloco.adaptation.runtime import OnnxFunction
from metaloco.sim.env import EnvConfig, LocomotionEnv
from metaloco.sim.scenario import load_scenario, run_scenario

MODELS = Path(__file__).parents[2] / "models" / "a1"


def test_shipped_files_match_the_manifest():
    manifest = json.loads((MODELS / "manifest.json").read_text())
    assert manifest["command"].startswith("metaloco train --preset full")
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((MODELS / name).read_bytes()).hexdigest() == digest, name
    assert (MODELS / "MODEL_CARD.md").is_file()


NOT_TRACKED = ("the shipped adapter does not bring its estimate closer to the true latent within 1.5 s of this fault "
               "(the policy walks on without it); see models/a1/MODEL_CARD.md, 'What these models do not do yet'")


@pytest.mark.parametrize("scenario_name", [
    "fl_knee_weak",  # a held-out joint
    pytest.param("rl_thigh_limp", marks=pytest.mark.xfail(strict=True, reason=NOT_TRACKED)),
    pytest.param("fr_knee_locked", marks=pytest.mark.xfail(strict=True, reason=NOT_TRACKED)),
])
def test_adapter_estimate_moves_toward_the_true_latent_after_a_fault(scenario_name):
    scenario = load_scenario(scenario_name)
    fault_t = scenario.events[0].t
    env = LocomotionEnv(EnvConfig(randomize_tasks=False), robot_cfg=scenario.robot)
    policy = MethodPolicy("adaptive", MODELS, scenario, env.dt)
    encoder = OnnxFunction(MODELS / "encoder.onnx")
    raw, true, times = [], [], []

    def tracked(obs, info):
        action = policy(obs, info)
        times.append(policy.steps * env.dt)
        raw.append(policy.adapter(policy.history.array()))
        true.append(encoder(info["privileged"]))
        return action

    trace = run_scenario(scenario, tracked, env=env)
    env.close()
    t, raw, true = np.array(times), np.array(raw), np.array(true)
    before = (t > fault_t - 1.0) & (t < fault_t)
    after = (t > fault_t + 0.5) & (t < fault_t + 1.5)
    assert after.any(), f"the robot fell before the window after the fault (at {trace.t[-1]:.2f} s)"
    z_after = true[after].mean(axis=0)
    z_before = true[before].mean(axis=0)
    assert np.linalg.norm(z_after - z_before) > 0.1, "the fault should change the true latent"
    err_before = np.linalg.norm(raw[before].mean(axis=0) - z_after)
    err_after = np.linalg.norm(raw[after].mean(axis=0) - z_after)
    # Measured with the shipped models on fl_knee_weak: 0.33 -> 0.28. Weak, but toward the truth.
    assert err_after < 0.9 * err_before, (err_before, err_after)
