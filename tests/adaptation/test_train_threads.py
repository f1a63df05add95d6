"""Training's speed-ups change no number it computes: rollouts on one torch thread and updates on all of them
(`rollouts_on_one_thread`), no second actor pass for rsl_rl's symmetry report (`skip_mirror_diagnostic`), and
phase 3's frozen phi evaluated once per update (`reuse_frozen_estimate`)."""

from dataclasses import replace

import pytest
import torch

from metaloco.adaptation import train as training
from metaloco.adaptation.updates import rollouts_on_one_thread
from metaloco.adaptation.train_config import load_train_config
from metaloco.hardware.robot_config import load_robot


class _Learner:
    """Stands in for an rsl_rl algorithm: only its `update` matters to the thread switch."""

    def __init__(self, fail: bool = False):
        self.fail = fail
        self.threads_seen: list[int] = []

    def update(self) -> dict[str, float]:
        self.threads_seen.append(torch.get_num_threads())
        if self.fail:
            raise RuntimeError("update failed")
        return {"loss": 0.0}


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield threads
    torch.set_num_threads(threads)


def test_the_update_runs_on_every_thread_and_the_rollout_on_one(restore_threads):
    learner = _Learner()
    rollouts_on_one_thread(learner, 2)
    assert torch.get_num_threads() == 1
    assert learner.update() == {"loss": 0.0}
    assert learner.threads_seen == [2]
    assert torch.get_num_threads() == 1


def test_a_failed_update_still_leaves_the_rollout_on_one_thread(restore_threads):
    learner = _Learner(fail=True)
    rollouts_on_one_thread(learner, 2)
    with pytest.raises(RuntimeError, match="update failed"):
        learner.update()
    assert torch.get_num_threads() == 1


def _checkpoints(run) -> dict[str, dict]:
    return {phase: torch.load(run / phase / "checkpoint.pt", weights_only=True)["alg"]
            for phase in ("phase1", "phase2", "phase3")}


def _flat(tree, prefix=""):
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _flat(value, f"{prefix}/{key}")
    else:
        yield prefix, tree


@pytest.mark.skipif(torch.get_num_threads() < 2, reason="needs 2 torch threads to switch between")
def test_one_thread_rollouts_train_the_same_numbers_as_two(tmp_path, monkeypatch, restore_threads):
    # The full preset's networks and 32 envs (the rollout's shapes), a few iterations of phases 1-3.
    cfg = replace(load_train_config("full"), steps_per_env=8, phase1_iterations=2, phase2_iterations=1,
                  finetune_iterations=1, robust_iterations=0, checkpoint_every=1, prior_samples=10)
    training.train(cfg, tmp_path / "one_thread", log=lambda line: None, export=False)
    assert torch.get_num_threads() == restore_threads  # each phase gives the threads back
    monkeypatch.setattr(training, "rollouts_on_one_thread", lambda alg, threads: None)
    training.train(cfg, tmp_path / "all_threads", log=lambda line: None, export=False)
    one, every = _checkpoints(tmp_path / "one_thread"), _checkpoints(tmp_path / "all_threads")
    for phase in one:
        a, b = dict(_flat(one[phase])), dict(_flat(every[phase]))
        assert a.keys() == b.keys()
        differ = [k for k in a if torch.is_tensor(a[k]) and not torch.equal(a[k], b[k])]
        assert not differ, f"{phase}: {differ[:5]}"
        assert any(torch.is_tensor(v) and v.numel() > 1000 for v in a.values())  # the real networks compared


def test_the_update_shortcuts_train_the_same_numbers(tmp_path, monkeypatch):
    # The full preset's rollout (32 envs x 48 steps) and mini-batch shapes; phase 3 twice, so that its second
    # rollout starts from a storage the first update put z_hat into. The robust phase is phase 1's PPO runner.
    cfg = replace(load_train_config("full"), phase1_iterations=1, phase2_iterations=1, finetune_iterations=2,
                  robust_iterations=0, checkpoint_every=1, prior_samples=10)
    training.train(cfg, tmp_path / "shortcuts", log=lambda line: None, export=False)
    monkeypatch.setattr(training, "skip_mirror_diagnostic", lambda alg: None)
    monkeypatch.setattr(training, "reuse_frozen_estimate", lambda alg: None)
    training.train(cfg, tmp_path / "plain", log=lambda line: None, export=False)
    for phase in ("phase1", "phase3"):
        a, b = (dict(_flat(torch.load(run / phase / "checkpoint.pt", weights_only=True)["alg"]))
                for run in (tmp_path / "shortcuts", tmp_path / "plain"))
        assert a.keys() == b.keys()
        differ = [k for k in a if torch.is_tensor(a[k]) and not torch.equal(a[k], b[k])]
        assert not differ, f"{phase}: {differ[:5]}"
        assert any(torch.is_tensor(v) and v.numel() > 1000 for v in a.values())


def test_symmetric_training_never_shows_a_held_out_fault(tmp_path, monkeypatch):
    # Every drawn fault is on FR_lower_joint, the mirror twin of the held-out FL_lower_joint, from the start.
    # Unscreened, half of each augmented batch of phase 1, phase 3 and the robust baseline would be
    # FL_lower_joint faults. Every augmented batch rsl_rl's update gets is recorded and checked.
    from metaloco.sim import mirror
    from metaloco.sim.tasks import FaultRange

    seen = []
    real = mirror.rsl_rl_augmentation

    def recording(*args, **kwargs):
        augment = real(*args, **kwargs)

        def wrapped(env=None, obs=None, actions=None):
            out_obs, out_actions = augment(env=env, obs=obs, actions=actions)
            if out_obs is not None and "privileged" in out_obs.keys():
                seen.append(out_obs["privileged"].clone())
            return out_obs, out_actions
        return wrapped

    monkeypatch.setattr(mirror, "rsl_rl_augmentation", recording)
    smoke = load_train_config("smoke")
    faults = FaultRange(probability=1.0, joints=["FR_lower_joint"], onset_s=[0.0, 0.0])
    cfg = replace(smoke, symmetry=True, curriculum=replace(smoke.curriculum, start=1.0),
                  env=replace(smoke.env, tasks=replace(smoke.env.tasks, faults=faults)))
    training.train(cfg, tmp_path / "run", log=lambda line: None, export=False)
    assert seen, "no augmented batch was recorded"
    batch = torch.cat(seen)
    names = load_robot("a1").joint_names
    fr_knee, fl_knee = (names.index(j) for j in ("FR_lower_joint", "FL_lower_joint"))
    # FR's twin is FL and FL's is FR: mirrors_onto(x, (fr_knee,)) asks "is there a fault on FL_lower_joint?"
    assert not mirror.mirrors_onto(batch, (fr_knee,), 12).any()
    assert mirror.mirrors_onto(batch, (fl_knee,), 12).float().mean() > 0.9  # the FR knee fault is there
