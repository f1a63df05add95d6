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
    assert manifest["command"].startswith("metaloco train --preset full ")
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((MODELS / name).read_bytes()).hexdigest() == digest, name
    assert (MODELS / "MODEL_CARD.md").is_file()


def test_the_preset_in_the_manifest_still_trains_the_shipped_config():
    """The card's command reproduces the models only if its preset still holds the settings they were trained with."""
    from metaloco.adaptation.train_config import TrainConfig, load_train_config
    from metaloco.schema import from_dict, to_dict

    manifest = json.loads((MODELS / "manifest.json").read_text())
    assert manifest["preset"] == "full", "issue 3: `full` is the run that produced the shipped models"
    assert manifest["command"].split()[:4] == ["metaloco", "train", "--preset", manifest["preset"]]
    # keys added since the run take their defaults, as they did when it ran
    trained = to_dict(from_dict(TrainConfig, manifest["config"], "manifest.json"))
    assert to_dict(load_train_config(manifest["preset"])) == trained


NOT_TRACKED = ("the shipped adapter brings its estimate less than a tenth closer to the true latent within 1.5 s of "
               "this fault; see models/a1/MODEL_CARD.md, 'What these models do not do yet'")


@pytest.mark.parametrize("scenario_name", [
    "rl_thigh_limp",
    pytest.param("fl_hip_bias", marks=pytest.mark.xfail(strict=True, reason=NOT_TRACKED)),
    "fl_knee_weak",  # a held-out joint
    pytest.param("fr_knee_locked", marks=pytest.mark.xfail(strict=True, reason=NOT_TRACKED)),
])
def test_adapter_estimate_moves_toward_the_true_latent_after_a_fault(scenario_name):
    r = adapter_tracking(config_dir() / "scenarios" / f"{scenario_name}.yaml", MODELS)
    assert r["error_after"] is not None, "the robot fell before the window after the fault"
    assert r["true_shift"] > 0.1, "the fault should change the true latent"
    # Measured with the shipped models (session 25, `full_push_focus`): rl_thigh_limp 13.80 -> 10.00 and
    # fl_knee_weak 15.68 -> 10.04; fl_hip_bias 15.78 -> 14.68 and fr_knee_locked 23.46 -> 21.43 move toward the
    # truth by less than a tenth (model card, 'Does the adapter find the fault?'). The models shipped until
    # session 24 moved toward it on rl_thigh_limp and fl_hip_bias and away on the two knees.
    assert r["error_after"] < 0.9 * r["error_before"], r
