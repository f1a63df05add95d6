"""The shipping gate (adaptation/gate.py): each limit binds, and `metaloco gate` judges real evaluations."""

import json
from pathlib import Path

import pytest

from metaloco.adaptation.gate import GATE, format_verdict, judge
from metaloco.cli import main
from metaloco.schema import ConfigError

MODELS = Path(__file__).parents[2] / "models" / "a1"


def _cell(return_mean=13.0, falls=0, tracking=0.05, recoveries=None):
    recoveries = [0.5] * 4 + [None] * 6 if recoveries is None else recoveries
    return {"return_mean": return_mean, "falls": falls, "tracking_error_mps": tracking}, recoveries


def _passing():
    """Results that meet every limit with nothing to spare: 3 falls, 20 of 50 recovered, mean return 13."""
    results = {name: _cell() for name in GATE.scenarios}
    results["push"] = _cell(falls=3)
    return results


def _failed(verdict):
    return [c["check"].split(" (")[0] for c in verdict["checks"] if not c["passed"]]


def test_results_within_every_limit_pass():
    verdict = judge(_passing())
    assert verdict["passed"] and verdict["official"] and verdict["episodes"] == 10
    assert [c["value"] for c in verdict["checks"]] == [0.05, 0, 3, "20 of 50", 13.0]


@pytest.mark.parametrize("change, check", [
    (lambda r: r.update(nominal_flat=_cell(tracking=0.11)), "nominal_flat tracking error"),
    (lambda r: r.update(nominal_flat=_cell(falls=1), push=_cell(falls=2)), "nominal_flat falls"),
    (lambda r: r.update(rough=_cell(falls=1)), "falls over the 12 scenarios"),
    (lambda r: r.update(rl_thigh_limp=_cell(recoveries=[None] * 10)), "episodes recovered within 1 s"),
    (lambda r: r.update(steps=_cell(return_mean=13.0 - 12 * 0.51)), "mean return over the 12 scenarios"),
])
def test_each_limit_alone_fails_the_gate(change, check):
    results = _passing()
    change(results)
    verdict = judge(results)
    assert not verdict["passed"]
    assert _failed(verdict) == [check]
    assert format_verdict(verdict).splitlines()[-1].startswith("gate: FAIL")


def test_a_recovery_slower_than_one_second_does_not_count():
    results = _passing()
    for name in GATE.recovery_scenarios:
        results[name] = _cell(recoveries=[1.01] * 10)
    assert _failed(judge(results)) == ["episodes recovered within 1 s"]


def test_fewer_episodes_scale_the_limits_and_are_not_the_gate():
    results = {name: _cell(recoveries=[0.2]) for name in GATE.scenarios}
    verdict = judge(results)
    assert verdict["passed"] and not verdict["official"] and verdict["episodes"] == 1
    assert [c["limit"] for c in verdict["checks"]][2:4] == ["<= 0", ">= 2"]
    results["push"] = _cell(falls=1, recoveries=[0.2])
    assert _failed(judge(results)) == ["falls over the 12 scenarios"]
    assert "an indication, not the gate" in format_verdict(judge(results))


def test_missing_or_uneven_results_are_refused_by_name():
    results = _passing()
    del results["ice"]
    with pytest.raises(ConfigError, match=r"no results for \['ice'\]"):
        judge(results)
    results = _passing()
    results["ice"] = _cell(recoveries=[0.5])
    with pytest.raises(ConfigError, match=r"same number of episodes, got \[1, 10\]"):
        judge(results)


def test_gate_command_judges_the_shipped_models_and_exits_by_the_verdict(capsys):
    code = main(["gate", str(MODELS), "--episodes", "1", "--json"])
    out, err = capsys.readouterr()
    verdict = json.loads(out.strip().splitlines()[-1])
    assert code == (0 if verdict["passed"] else 1)
    assert verdict["episodes"] == 1 and not verdict["official"] and verdict["method"] == "adaptive"
    assert list(verdict["scenarios"]) == list(GATE.scenarios)
    assert err.count("[gate] ") == len(GATE.scenarios)  # a progress line per scenario, on stderr
    figures = verdict["scenarios"].values()
    checks = {c["check"]: c for c in verdict["checks"]}
    assert checks["falls over the 12 scenarios"]["value"] == sum(s["falls"] for s in figures)
    mean = sum(s["return_mean"] for s in figures) / len(GATE.scenarios)
    assert checks["mean return over the 12 scenarios"]["value"] == pytest.approx(mean, abs=1e-3)
    assert verdict["passed"] == all(c["passed"] for c in verdict["checks"])


def test_gate_command_refuses_a_folder_without_models(tmp_path, capsys):
    assert main(["gate", str(tmp_path)]) == 2
    assert "no policy.onnx here" in capsys.readouterr().err


def test_fresh_episodes_confirm_but_are_not_the_gate():
    verdict = judge(_passing(), first_episode=10)
    assert verdict["passed"] and not verdict["official"] and verdict["first_episode"] == 10
    assert "on episodes 10-19, fresh seeds: a confirmation, not the gate" in format_verdict(verdict)
    assert judge(_passing())["official"]


def test_fresh_episodes_are_the_later_episodes_of_the_same_scenario():
    from metaloco.adaptation.evaluate import evaluate_episodes

    _, both = evaluate_episodes("nominal_flat", "adaptive", 2, MODELS)
    summary, second = evaluate_episodes("nominal_flat", "adaptive", 1, MODELS, first_episode=1)
    assert second == both[1:] and both[0] != both[1]
    assert summary["return_mean"] == pytest.approx(second[0]["return"], abs=1e-4)
    with pytest.raises(ConfigError, match=r"first_episode.*must be 0 or more, got -1"):
        evaluate_episodes("nominal_flat", "adaptive", 1, MODELS, first_episode=-1)


def test_gate_command_refuses_a_negative_first_episode(capsys):
    assert main(["gate", str(MODELS), "--first-episode", "-1"]) == 2
    assert "must be 0 or more, got -1" in capsys.readouterr().err
