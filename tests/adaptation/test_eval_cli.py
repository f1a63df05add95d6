"""`metaloco eval ... --json` as DESIGN.md gives it, on the smoke export (which has phase 3)."""

import json

import pytest

from metaloco.adaptation.metrics import EVAL_KEYS
from metaloco.cli import main

SCENARIO = """name: short_lock
robot: a1
seed: 3
duration_s: 2.0
command: {vx: 0.5, vy: 0.0, yaw_rate: 0.0}
terrain: {type: flat, friction: 0.8}
events:
  - {t: 1.0, fault: {joint: FR_lower_joint, mode: locked}}
"""


@pytest.mark.parametrize("method", ["adaptive", "nominal", "robust", "oracle"])
def test_eval_prints_one_json_object_with_the_design_keys(smoke_run, tmp_path, capsys, method):
    scenario = tmp_path / "short_lock.yaml"
    scenario.write_text(SCENARIO)
    args = ["eval", "--scenario", str(scenario), "--method", method, "--episodes", "2", "--json",
            "--model-dir", str(smoke_run / "export")]
    assert main(args) == 0
    out, err = capsys.readouterr()
    result = json.loads(out.strip().splitlines()[-1])
    assert tuple(result) == EVAL_KEYS
    assert (result["scenario"], result["method"], result["episodes"]) == ("short_lock", method, 2)
    assert isinstance(result["return_mean"], float) and isinstance(result["falls"], int)
    assert result["recovery_time_s"] is None or 0.0 <= result["recovery_time_s"] <= 1.0  # 1 s left after the event
    assert err.count("[eval] short_lock") == 2  # a progress line per episode, on stderr
    # The smoke pi is fine-tuned on the adapter's estimate (phase 3): a fixed or true latent is flagged.
    assert ("fine-tuned on the adapter's estimate" in err) == (method in ("nominal", "oracle"))


def test_eval_refuses_bad_input_naming_it(smoke_run, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["eval", "--scenario", "nominal_flat", "--method", "ideal", "--model-dir", str(smoke_run / "export")])
    assert exit_.value.code == 2 and "invalid choice: 'ideal'" in capsys.readouterr().err
    assert main(["eval", "--scenario", "nominal_flat", "--method", "adaptive", "--episodes", "0",
                 "--model-dir", str(smoke_run / "export")]) == 2
    err = capsys.readouterr().err
    assert "episodes" in err and "at least 1, got 0" in err
    assert main(["eval", "--scenario", "nominal_flat", "--method", "adaptive",
                 "--model-dir", str(tmp_path / "nowhere")]) == 2
    assert "policy.onnx: model file not found" in capsys.readouterr().err
    assert main(["eval", "--scenario", "nominal_flat", "--method", "adaptive", "--workers", "0",
                 "--model-dir", str(smoke_run / "export")]) == 2
    assert "--workers: 'workers': must be a whole number of processes, 1 or more, got 0" in capsys.readouterr().err


def test_eval_on_the_training_family_prints_its_returns_and_refuses_a_bad_difficulty(smoke_run, capsys):
    args = ["eval", "--family", "smoke", "--method", "adaptive", "--episodes", "2", "--json",
            "--model-dir", str(smoke_run / "export")]
    assert main(args) == 0
    out, err = capsys.readouterr()
    result = json.loads(out.strip().splitlines()[-1])
    assert (result["method"], result["difficulty"], result["episodes"]) == ("adaptive", 1.0, 2)
    assert len(result["returns"]) == 2 and isinstance(result["falls"], int)
    assert len(result["fell"]) == 2 and result["falls"] == sum(result["fell"])
    assert err.count("[eval] family difficulty 1.0 adaptive episode") == 2
    assert main(args[:-2] + ["--first-episode", "1", "--episodes", "1", "--model-dir", str(smoke_run / "export")]) == 0
    later = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (later["first_episode"], later["returns"], later["fell"]) == (1, result["returns"][1:], result["fell"][1:])
    assert main(args[:-2] + ["--first-episode", "-1", "--model-dir", str(smoke_run / "export")]) == 2
    assert "first_episode" in capsys.readouterr().err
    assert main(args[:-2] + ["--difficulty", "1.5", "--model-dir", str(smoke_run / "export")]) == 2
    assert "difficulty" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["eval", "--family", "smoke", "--scenario", "ice", "--method", "adaptive"])
    assert exit_.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_eval_latent_source_raw_reaches_the_policy(smoke_run, tmp_path, capsys):
    """`--latent-source raw` evaluates `adaptive` with phi's raw output, as evaluate_episodes(latent_source='raw')."""
    from metaloco.adaptation.evaluate import evaluate_episodes

    scenario = tmp_path / "short_lock.yaml"
    scenario.write_text(SCENARIO)
    args = ["eval", "--scenario", str(scenario), "--method", "adaptive", "--episodes", "1", "--json",
            "--model-dir", str(smoke_run / "export"), "--latent-source", "raw"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    raw, _ = evaluate_episodes(scenario, "adaptive", 1, smoke_run / "export", latent_source="raw")
    assert result == raw
    fused, _ = evaluate_episodes(scenario, "adaptive", 1, smoke_run / "export")
    assert fused != raw, "the feed made no difference here: this test could not tell whether the flag arrived"
