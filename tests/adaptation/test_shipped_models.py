"""The shipped A1 models (models/a1/) load, match their manifest, and the adapter tracks a fault."""

import hashlib
import json
from pathlib import Path

import pytest

from metaloco.adaptation.card_diagnostics import adapter_tracking
from metaloco.paths import config_dir

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
    "rl_thigh_limp",
    "fl_hip_bias",
    pytest.param("fl_knee_weak", marks=pytest.mark.xfail(strict=True, reason=NOT_TRACKED)),  # a held-out joint
    pytest.param("fr_knee_locked", marks=pytest.mark.xfail(strict=True, reason=NOT_TRACKED)),
])
def test_adapter_estimate_moves_toward_the_true_latent_after_a_fault(scenario_name):
    r = adapter_tracking(config_dir() / "scenarios" / f"{scenario_name}.yaml", MODELS)
    assert r["error_after"] is not None, "the robot fell before the window after the fault"
    assert r["true_shift"] > 0.1, "the fault should change the true latent"
    # Measured with the shipped models (session 9): rl_thigh_limp 6.09 -> 4.60, fl_hip_bias 2.57 -> 2.29;
    # fl_knee_weak 4.13 -> 5.82 and fr_knee_locked 11.57 -> 13.39 move away (model card, 'Does the adapter ...').
    assert r["error_after"] < 0.9 * r["error_before"], r
