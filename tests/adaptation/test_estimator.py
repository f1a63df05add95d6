"""The online estimator: clamps implausible latents, flags them, and re-converges after a change."""

import numpy as np
import pytest

from metaloco.adaptation.estimator import LatentEstimator
from metaloco.adaptation.prior import LatentPrior, fit_prior

JOINTS = [f"j{i}" for i in range(12)]


def make_prior(dim=8, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(dim, dim)) * 0.3
    z = rng.normal(size=(3000, dim)) @ a + 0.5
    health = np.hstack([np.ones((3000, 12)), np.zeros((3000, 12))])
    # joint 3's torque scale is written in latent dimension 0
    health[:, 3] = 1.0 - 0.5 * (z[:, 0] - 0.5)
    return fit_prior(z, health, nominal=np.full(dim, 0.5), joint_names=JOINTS)


def test_prior_round_trips_through_json(tmp_path):
    prior = make_prior()
    prior.save(tmp_path / "prior.json")
    again = LatentPrior.load(tmp_path / "prior.json")
    np.testing.assert_allclose(again.cov, prior.cov)
    assert again.mahalanobis2(prior.mean) == pytest.approx(0.0)


def test_latent_far_outside_the_prior_is_clamped_and_flagged():
    prior = make_prior()
    est = LatentEstimator(prior)
    far = prior.mean + 50.0 * np.sqrt(np.diag(prior.cov))
    e = est.update(far, 0.0)
    assert e.clamped and e.confidence <= 0.05
    assert prior.mahalanobis2(e.latent) == pytest.approx(est.gate, rel=1e-6)
    near = est.update(prior.mean + 0.1 * np.sqrt(np.diag(prior.cov)), 0.1)
    assert not near.clamped and near.confidence > 0.5


def test_nan_latent_is_clamped_not_propagated():
    prior = make_prior()
    est = LatentEstimator(prior)
    est.update(prior.mean, 0.0)
    e = est.update(np.full(8, np.nan), 0.1)
    assert e.clamped and np.all(np.isfinite(e.latent))


def test_change_is_detected_and_the_estimate_jumps_instead_of_averaging():
    prior = make_prior()
    est = LatentEstimator(prior, tau_s=1.0)
    a = prior.mean.copy()
    b = prior.mean + 3.0 * np.sqrt(np.diag(prior.cov))
    for k in range(20):
        est.update(a, 0.1 * k)
    e = est.update(b, 2.0)
    assert e.change_detected
    np.testing.assert_allclose(e.latent, est.clamp(b)[0])  # no blend of old and new
    # Small noise afterwards is smoothed, not treated as new changes.
    rng = np.random.default_rng(1)
    for k in range(10):
        e = est.update(b + 0.05 * rng.normal(size=8) * np.sqrt(np.diag(prior.cov)), 2.1 + 0.1 * k)
        assert not e.change_detected


def test_suspected_joint_comes_from_the_readout():
    prior = make_prior()
    est = LatentEstimator(prior)
    z = prior.mean.copy()
    z[0] += 1.6  # joint j3's torque scale read-out drops by ~0.8
    assert est.suspect(z) == "j3"
    assert est.suspect(prior.mean) is None


def test_the_policy_is_fed_the_fused_estimate_or_the_raw_one_as_asked():
    """latent_source 'fused' gives the clamped, smoothed estimate; 'raw' phi's output as it is, but never a
    non-finite one; any other choice is refused by name."""
    from metaloco.adaptation.estimator import check_latent_source, policy_latent
    from metaloco.schema import ConfigError

    assert check_latent_source("fused") == "fused" and check_latent_source("raw") == "raw"
    with pytest.raises(ConfigError, match=r"latent_source.*'auto'.*\['fused', 'raw'\]"):
        check_latent_source("auto")

    prior = make_prior()
    est = LatentEstimator(prior, tau_s=1.0)
    est.update(prior.mean, 0.0)
    d = np.sqrt(np.diag(prior.cov))
    step = prior.mean + d * 1.5 / np.sqrt(prior.mahalanobis2(prior.mean + d))  # 1.5 < change_threshold: it lags
    e = est.update(step, 0.1)
    assert not e.change_detected and not e.clamped
    np.testing.assert_array_equal(policy_latent(e, "raw"), step)
    np.testing.assert_array_equal(policy_latent(e, "fused"), e.latent)
    assert np.linalg.norm(e.latent - step) > 0.5 * np.linalg.norm(step - prior.mean), "the fused one lags"
    far = est.update(prior.mean + 50.0 * np.sqrt(np.diag(prior.cov)), 0.2)  # raw is raw: no clamp
    np.testing.assert_array_equal(policy_latent(far, "raw"), far.raw)
    bad = est.update(np.full(8, np.nan), 0.3)  # a non-finite output never reaches the policy
    np.testing.assert_array_equal(policy_latent(bad, "raw"), bad.latent)
    assert np.all(np.isfinite(policy_latent(bad, "raw")))


def test_phase_3s_batched_fusion_is_the_estimator_refreshed_as_adaptive_is():
    """FusedFeed (phase 3 with `finetune_latent_feed: fused`) gives, for every environment and filter, the latents
    `MethodPolicy` feeds pi: LatentEstimator.update on the first step of an episode and every `every`-th after, held
    in between, restarted on a reset; through clamping, a detected change and a non-finite estimate."""
    import torch

    from metaloco.adaptation.updates import FusedFeed

    prior = make_prior()
    rng = np.random.default_rng(3)
    n, width, every, dt, steps = 5, 2, 5, 0.02, 60
    z = prior.mean + rng.normal(size=(steps, n, width, prior.dim)) * 0.3
    z[10:, 1] += 3.0  # a jump: a detected change
    z[20:25, 2] *= 40.0  # far outside the prior: clamped
    z[31, 3, 0, 2] = np.nan  # a non-finite estimate keeps the filter's state
    resets = {17: [0, 4], 40: [1]}
    feed = FusedFeed(prior, n, every, dt, width=width)
    reference = [[LatentEstimator(prior) for _ in range(width)] for _ in range(n)]
    count, held = np.zeros(n, dtype=int), np.tile(prior.mean, (n, width, 1))
    changes = clamps = 0
    for t in range(steps):
        got = feed.step(torch.as_tensor(z[t])).numpy()
        for e in range(n):
            count[e] += 1
            if count[e] % every == 1:
                for w in range(width):
                    est = reference[e][w].update(z[t, e, w], count[e] * dt)
                    held[e, w] = est.latent
                    changes += est.change_detected
                    clamps += est.clamped
        np.testing.assert_allclose(got, held, rtol=0, atol=1e-12, err_msg=f"step {t}")
        done = torch.zeros(n, dtype=torch.bool)
        for e in resets.get(t, []):
            done[e] = True
            count[e] = 0
            held[e] = prior.mean
            for est in reference[e]:
                est.reset()
        feed.reset(done)
    assert changes and clamps, "the sequence exercised a detected change and the clamp"
    assert np.all(np.isfinite(held))
