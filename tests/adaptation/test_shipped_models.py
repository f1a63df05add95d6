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


NOT_TRACKED = ("the shipped adapter brings its estimate less than a tenth closer to the true latent within 5 s of "
               "this fault; see models/a1/MODEL_CARD.md, 'What these models do not do yet'")


@pytest.mark.parametrize("scenario_name, window", [
    ("rl_thigh_limp", "error_late"),
    pytest.param("fl_hip_bias", "error_late", marks=pytest.mark.xfail(strict=True, reason=NOT_TRACKED)),
    ("fl_knee_weak", "error_late"),  # a held-out joint
    ("fr_knee_locked", "error_after"),
])
def test_adapter_estimate_moves_toward_the_true_latent_after_a_fault(scenario_name, window):
    r = adapter_tracking(config_dir() / "scenarios" / f"{scenario_name}.yaml", MODELS)
    assert r[window] is not None, "the robot fell before the window after the fault"
    assert r["true_shift"] > 0.1, "the fault should change the true latent"
    # Measured with the shipped models under the adaptation node's default since session 26 (pi fed phi's raw
    # output, as phase 3 trained it): fr_knee_locked 21.86 -> 8.45 within 0.5-1.5 s; rl_thigh_limp 12.25 -> 8.91
    # and fl_knee_weak 14.12 -> 8.17 only 3-5 s after the fault (0.5-1.5 s: 11.94 and 14.69); fl_hip_bias
    # 14.25 -> 14.42. Fed the fused estimate (until session 26) the limp thigh and the weak knee moved within
    # 0.5-1.5 s (13.80 -> 9.99, 15.67 -> 10.04) and the locked knee did not (23.46 -> 21.43) (model card, 'Does
    # the adapter find the fault?', and HISTORY.md, session 26).
    assert r[window] < 0.9 * r["error_before"], r
