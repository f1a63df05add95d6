"""`metaloco compare`: two training-family results judged episode by episode."""

import json

import pytest

from metaloco.adaptation.compare import load_result, mcnemar_p, paired_comparison
from metaloco.cli import main
from metaloco.schema import ConfigError


def family_result(returns, fell, first_episode=0):
    """What `evaluate_family` returns, for these episodes."""
    return {"method": "adaptive", "difficulty": 1.0, "first_episode": first_episode, "episodes": len(returns),
            "return_mean": sum(returns) / len(returns), "return_sem": 0.0, "falls": sum(fell),
            "tracking_error_mps": 0.1, "returns": returns, "fell": fell}


def test_mcnemar_counts_only_the_episodes_where_one_of_the_two_fell():
    assert mcnemar_p(5, 1) == pytest.approx(2 * (1 + 6) / 64)  # P(X <= 1 | 6 tosses), both tails
    assert mcnemar_p(1, 5) == mcnemar_p(5, 1)
    assert mcnemar_p(0, 0) == 1.0 and mcnemar_p(3, 3) == 1.0
    assert mcnemar_p(10, 0) == pytest.approx(2 / 1024)


def test_paired_comparison_pairs_returns_and_falls_episode_by_episode():
    a = family_result([10.0, 12.0, 5.0, 20.0], [False, False, True, True])
    b = family_result([11.0, 12.0, 9.0, 19.0], [False, True, False, True])
    c = paired_comparison(a, b)
    assert c["return_diff"] == pytest.approx(-1.0)  # differences -1, 0, -4, +1
    assert c["return_diff_sem"] == pytest.approx((14 / 3) ** 0.5 / 2)
    assert (c["falls_a"], c["falls_b"], c["fell_only_a"], c["fell_only_b"]) == (2, 2, 1, 1)
    assert c["falls_p"] == 1.0
    assert c["fall_rate_diff"] == 0.0  # per episode 0, -1, +1, 0
    assert c["fall_rate_diff_sem"] == pytest.approx((2 / 3) ** 0.5 / 2)


def test_the_fall_rate_difference_counts_each_discordant_episode_once():
    a = family_result([1.0] * 5, [True, True, True, False, False])
    b = family_result([1.0] * 5, [True, False, False, False, True])
    c = paired_comparison(a, b)  # per episode 0, +1, +1, 0, -1
    assert c["fall_rate_diff"] == pytest.approx(0.2)
    assert c["fall_rate_diff_sem"] == pytest.approx((0.7 ** 0.5) / 5 ** 0.5)
    bare = {k: v for k, v in a.items() if k != "fell"}
    assert paired_comparison(bare, b)["fall_rate_diff"] is None


def test_results_over_other_episodes_are_refused_by_name():
    a = family_result([1.0, 2.0], [False, False])
    with pytest.raises(ConfigError, match="'episodes': the two results differ"):
        paired_comparison(a, family_result([1.0], [False]))
    with pytest.raises(ConfigError, match="'first_episode': the two results start at different episodes"):
        paired_comparison(a, family_result([1.0, 2.0], [False, False], first_episode=60))


def test_the_cli_reads_eval_output_with_its_progress_lines(tmp_path, capsys):
    a, b = tmp_path / "a.out", tmp_path / "b.out"
    a.write_text("[eval] family difficulty 1.0 adaptive episode 1/2: fell, return 3.00\n"
                 + json.dumps(family_result([3.0, 8.0], [True, False])) + "\n")
    b.write_text(json.dumps(family_result([4.0, 8.0], [False, False])) + "\n")
    assert main(["compare", str(a), str(b), "--json"]) == 0
    c = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (c["return_diff"], c["fell_only_a"], c["fell_only_b"]) == (-0.5, 1, 0)
    assert main(["compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "episodes where only a fell: 1, only b: 0" in out and "fall rate a - b +0.5000 +- 0.5000" in out
    (tmp_path / "empty.out").write_text("[eval] nothing\n")
    assert main(["compare", str(tmp_path / "empty.out"), str(b)]) == 2
    assert "no JSON line with per-episode returns" in capsys.readouterr().err
    assert main(["compare", str(tmp_path / "missing.out"), str(b)]) == 2
    assert "not found" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="not found"):
        load_result(tmp_path / "missing.out")
