"""The training-family evaluation: every method walks the same random tasks and commands."""

from pathlib import Path

import pytest

from metaloco.adaptation.evaluate import evaluate_family
from metaloco.adaptation.train_config import load_train_config

MODELS = Path(__file__).parents[2] / "models" / "a1"


def test_methods_walk_the_same_tasks_episode_by_episode():
    env = load_train_config("full").env
    # At difficulty 0 every task is flat ground with no payload, fault or latency (friction 0.8), so the true
    # latent is close to the nominal one: oracle and nominal then score alike episode by episode, which they
    # only do if they also get the same commands (two episodes with different commands differ by more).
    nominal = evaluate_family("nominal", MODELS, env, 0.0, 2)
    oracle = evaluate_family("oracle", MODELS, env, 0.0, 2)
    assert oracle["returns"] == pytest.approx(nominal["returns"], rel=0.01)
    assert abs(nominal["returns"][0] - nominal["returns"][1]) > 0.05 * nominal["returns"][0]
    hard = evaluate_family("nominal", MODELS, env, 1.0, 2)
    assert hard["returns"] != nominal["returns"], "difficulty 1 should draw other tasks than the nominal one"
    assert hard == evaluate_family("nominal", MODELS, env, 1.0, 2), "the same episodes again"
    assert set(hard) == {"method", "difficulty", "episodes", "return_mean", "return_sem", "falls",
                         "tracking_error_mps", "returns"} and len(hard["returns"]) == 2
