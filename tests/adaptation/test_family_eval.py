"""The training-family evaluation: every method walks the same random tasks and commands."""

from pathlib import Path

import numpy as np
import pytest

from metaloco.adaptation.evaluate import evaluate_family
from metaloco.adaptation.train_config import load_train_config
from metaloco.schema import ConfigError

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
    assert set(hard) == {"method", "difficulty", "first_episode", "episodes", "return_mean", "return_sem", "falls",
                         "tracking_error_mps", "returns", "fell"} and len(hard["returns"]) == len(hard["fell"]) == 2
    later = evaluate_family("nominal", MODELS, env, 1.0, 1, first_episode=1)
    assert (later["returns"], later["fell"]) == (hard["returns"][1:], hard["fell"][1:]), "episode 1 is episode 1"
    lines = []
    assert evaluate_family("nominal", MODELS, env, 1.0, 2, progress=lines.append, workers=2) == hard, \
        "episodes in worker processes are the same episodes"
    assert [line.split(":")[0][-3:] for line in lines] == ["1/2", "2/2"], "progress in episode order"


def test_an_observer_needs_the_episodes_in_this_process():
    env = load_train_config("full").env
    with pytest.raises(ConfigError, match=r"--workers.*needs workers=1, got 2"):
        evaluate_family("adaptive", MODELS, env, 1.0, 2, observe=lambda i, info, policy: None, workers=2)


def test_observe_sees_every_step_with_the_policy_that_acted():
    env = load_train_config("full").env
    seen = []
    evaluate_family("adaptive", MODELS, env, 1.0, 1, observe=lambda i, info, policy: seen.append(
        (i, policy.steps, info["privileged"].shape)))
    assert [s[1] for s in seen] == list(range(1, len(seen) + 1)), "one call per step, after the policy acted"
    assert {s[0] for s in seen} == {0} and len(seen) > 50


def test_the_adapter_error_on_the_family_is_measured_against_the_true_latent():
    from metaloco.adaptation.card_diagnostics import family_adapter_error

    env = load_train_config("full").env
    calm = family_adapter_error(MODELS, env, 0.0, 1)  # the nominal task: no fault, the latent never jumps
    assert calm["fault_explained"] is None and calm["fault_steps"] == 0
    hard = family_adapter_error(MODELS, env, 1.0, 3)
    assert 0 < hard["fault_steps"] <= hard["steps"]
    assert hard["explained"] < 1.0 and hard["error"] > 0 and hard["spread"] > 0


@pytest.mark.parametrize("source", ["fused", "raw"])
def test_adaptive_feeds_pi_the_fused_or_the_raw_estimate_at_the_adapters_rate(source):
    """`adaptive` refreshes pi's latent every ADAPT_PERIOD_S, as the adaptation node does: by default with the
    estimate fused with the prior, with latent_source 'raw' with phi's output as it is (what phase 3 trained the
    shipped pi on)."""
    env = load_train_config("full").env
    gaps = []

    def observe(i, info, policy):
        assert policy.latent_source == source
        if policy.steps % policy.adapt_every == 1:  # an update step
            raw = policy.adapter(policy.history.array())
            fed = raw if source == "raw" else policy.estimator.state
            np.testing.assert_allclose(policy.latents[-1], fed, rtol=0, atol=1e-6)
            gaps.append(float(np.linalg.norm(raw - policy.estimator.state)))
        else:
            np.testing.assert_array_equal(policy.latents[-1], policy.latents[-2])

    kwargs = {} if source == "fused" else {"latent_source": source}
    evaluate_family("adaptive", MODELS, env, 1.0, 1, observe=observe, **kwargs)
    assert len(gaps) > 10
    assert max(gaps) > 1e-3, "the fused estimate never differed from the raw one: the test could not fail"
