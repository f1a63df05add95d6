"""The smoke preset trains every phase end to end, exports, and the exports agree with torch."""

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from metaloco.adaptation.export import ARTIFACTS, _ProbeEnv, load_run_config
from metaloco.adaptation.networks import AdapterGraph, EncoderGraph, PolicyGraph, RobustGraph
from metaloco.adaptation.runtime import POLICY_KEYS, load_policy
from metaloco.adaptation.train import make_distillation_runner, make_finetune_runner, make_ppo_runner
from metaloco.hardware.robot_config import load_robot


def test_smoke_run_writes_every_artifact(smoke_run):
    export = smoke_run / "export"
    for name in ARTIFACTS + ("manifest.json",):
        assert (export / name).is_file(), name
    manifest = json.loads((export / "manifest.json").read_text())
    import hashlib

    for name, digest in manifest["files"].items():
        assert hashlib.sha256((export / name).read_bytes()).hexdigest() == digest
    assert manifest["env_steps"] == 4 * 2 * 4 * 8  # four phases x 2 iterations x 4 envs x 8 steps
    for phase in ("phase1", "phase2", "phase3", "robust"):
        rows = (smoke_run / phase / "progress.csv").read_text().splitlines()
        assert rows[0].startswith("iteration,env_steps") and len(rows) == 3


def test_checkpoints_load_with_weights_only(smoke_run):
    for phase in ("phase1", "phase2", "phase3", "robust"):
        saved = torch.load(smoke_run / phase / "checkpoint.pt", weights_only=True)
        assert saved["iteration"] == 2


def _torch_models(run):
    cfg = load_run_config(run)
    probe = _ProbeEnv(cfg)
    phase1 = torch.load(run / "phase1" / "checkpoint.pt", weights_only=True)
    ppo = make_ppo_runner(cfg, probe, rma=True)
    ppo.alg.load(phase1["alg"], None, strict=True)
    distill = make_distillation_runner(cfg, probe, phase1["alg"]["actor_state_dict"])
    distill.alg.load(torch.load(run / "phase2" / "checkpoint.pt", weights_only=True)["alg"], None, strict=True)
    robust = make_ppo_runner(cfg, probe, rma=False)
    robust.alg.load(torch.load(run / "robust" / "checkpoint.pt", weights_only=True)["alg"], None, strict=True)
    finetune = make_finetune_runner(cfg, probe, phase1["alg"], distill.alg.save())
    finetune.alg.load(torch.load(run / "phase3" / "checkpoint.pt", weights_only=True)["alg"], None, strict=True)
    return cfg, ppo.alg.get_policy(), distill.alg.student, robust.alg.get_policy(), finetune.alg.get_policy()


def test_phase3_tunes_pi_on_the_adapter_and_leaves_phi_alone(smoke_run):
    _, actor, student, _, tuned = _torch_models(smoke_run)
    for name, p in tuned.adapter.state_dict().items():
        assert torch.equal(p, student.adapter.state_dict()[name]), name
    for name, p in tuned.obs_normalizer.state_dict().items():
        assert torch.equal(p, student.obs_normalizer.state_dict()[name]), name
    moved = max((p - actor.mlp.state_dict()[name]).abs().max().item() for name, p in tuned.mlp.state_dict().items())
    assert moved > 1e-4  # two PPO updates moved pi


def test_onnxruntime_matches_torch_on_random_inputs(smoke_run):
    cfg, actor, student, robust, tuned = _torch_models(smoke_run)
    export = smoke_run / "export"
    rng = np.random.default_rng(0)
    obs_dim = 50
    cases = {
        "policy.onnx": (PolicyGraph(tuned), {"obs": (1, obs_dim), "latent": (1, cfg.latent_dim)}),
        "before_phase3/policy.onnx": (PolicyGraph(actor), {"obs": (1, obs_dim), "latent": (1, cfg.latent_dim)}),
        "adapter.onnx": (AdapterGraph(student), {"history": (1, cfg.history_length, obs_dim)}),
        "encoder.onnx": (EncoderGraph(actor), {"privileged": (1, 52)}),
        "robust.onnx": (RobustGraph(robust), {"obs": (1, obs_dim)}),
    }
    for name, (module, shapes) in cases.items():
        sess = ort.InferenceSession(str(export / name), providers=["CPUExecutionProvider"])
        for _ in range(20):
            feeds = {k: rng.normal(0, 2, s).astype(np.float32) for k, s in shapes.items()}
            with torch.no_grad():
                expected = module(*[torch.from_numpy(v) for v in feeds.values()]).numpy()
            got = sess.run(None, feeds)[0]
            assert np.abs(got - expected).max() <= 1e-5, name


def test_metadata_carries_every_contract_key(smoke_run):
    policy = load_policy(smoke_run / "export", load_robot("a1"))
    for key in POLICY_KEYS:
        assert key in policy.meta
    assert policy.meta["joint_names"][0] == "FR_hip_joint"
    assert [tuple(x) for x in policy.meta["obs_layout"]][0] == ("base_ang_vel", 3)
    # The smoke run has phase 3: its pi must only run on the adapter's estimate; phase 1's pi on any latent.
    assert policy.latent_input == "adapter"
    assert load_policy(smoke_run / "export" / "before_phase3", load_robot("a1")).latent_input == "any"


def test_a_node_can_run_the_model_from_the_onnx_file_alone(smoke_run):
    """Drive a simulated robot using nothing but policy.onnx, its metadata and onnxruntime."""
    from metaloco.hardware.interface import JointCommand
    from metaloco.sim.observation import build_observation
    from metaloco.sim.robot import SimRobot

    sess = ort.InferenceSession(str(smoke_run / "export" / "policy.onnx"), providers=["CPUExecutionProvider"])
    raw = sess.get_modelmeta().custom_metadata_map
    meta = {k: json.loads(raw[k]) for k in POLICY_KEYS if k not in ("robot", "metaloco_version")}
    from metaloco.sim.gait import ActionMap

    action_map = ActionMap.from_metadata(meta["default_joint_pos"], meta["action_scale"], json.dumps(meta["gait"]))
    robot = SimRobot(load_robot("a1"))
    robot.reset()
    kp, kd = np.asarray(meta["kp"]), np.asarray(meta["kd"])
    last = np.zeros(sess.get_outputs()[0].shape[-1])
    latent = np.zeros((1, meta["latent_dim"]), np.float32)
    for _ in range(25):
        obs = build_observation(robot.read_state(), np.array([0.5, 0, 0]), last, action_map.phase_observation(),
                                np.asarray(meta["default_joint_pos"]))
        assert obs.shape[0] == sum(size for _, size in meta["obs_layout"])
        last = sess.run(["actions"], {"obs": obs[None], "latent": latent})[0][0]
        targets = action_map.targets(last, meta["control_dt"])
        robot.write_command(JointCommand(position=targets, kp=kp, kd=kd))
        robot.step()
    assert robot.base_state()[0][2] > 0.15
    robot.close()


def test_training_resumes_from_its_checkpoint(tmp_path):
    from metaloco.adaptation.train import train
    from metaloco.adaptation.train_config import load_train_config

    cfg = load_train_config("smoke")
    cfg.phase1_iterations, cfg.phase2_iterations, cfg.robust_iterations = 1, 1, 0
    lines: list[str] = []
    train(cfg, tmp_path, log=lines.append, export=False)
    cfg.phase1_iterations = 2
    lines.clear()
    train(cfg, tmp_path, log=lines.append, export=False)
    assert any("[phase1] resuming at iteration 1" in line for line in lines)
    changed = [line for line in lines if line.startswith("[config] WARNING")]
    assert len(changed) == 1 and changed[0].endswith("config.yaml: phase1_iterations: 1 -> 2"), changed
    assert any("[phase1] it 2/2" in line for line in lines)
    assert not any("[phase2] it" in line for line in lines)  # phase 2 was already done
    assert "[phase2] done: iteration 1 of 1 in its checkpoint" in lines
    assert not any(line.startswith("[phase2] resuming") for line in lines), "a finished phase is not resumed"
    assert torch.load(tmp_path / "phase1" / "checkpoint.pt", weights_only=True)["iteration"] == 2


def test_a_resumed_phase_draws_fresh_randomness_and_two_resumes_agree(tmp_path):
    """A resume must not replay the phase's first tasks and action noise, and must itself be repeatable."""
    import shutil

    from metaloco.adaptation.train import SEED_OFFSETS, phase_seed, train
    from metaloco.adaptation.train_config import load_train_config

    assert phase_seed(7, 0) == 7, "an uninterrupted run keeps its seed"
    assert len({phase_seed(7, 0), phase_seed(7, 10), phase_seed(7, 20), phase_seed(8, 10)}) == 4
    cfg = load_train_config("smoke")
    cfg.phase1_iterations, cfg.phase2_iterations, cfg.finetune_iterations, cfg.robust_iterations = 1, 0, 0, 0
    train(cfg, tmp_path / "a", log=lambda line: None, export=False)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    cfg.phase1_iterations = 2
    logs = {}
    for run in ("a", "b"):
        logs[run] = []
        train(cfg, tmp_path / run, log=logs[run].append, export=False)
    seed = phase_seed(cfg.seed + SEED_OFFSETS["phase1"], 1)
    assert any("[phase1] resuming at iteration 1" in line and f"seeded {seed}, not {cfg.seed}" in line
               for line in logs["a"]), logs["a"]
    a, b = (torch.load(tmp_path / run / "phase1" / "checkpoint.pt", weights_only=True)["alg"]["actor_state_dict"]
            for run in ("a", "b"))
    assert all(torch.equal(a[k], b[k]) for k in a), "two resumes from one checkpoint train the same numbers"


def test_unknown_preset_is_refused():
    from metaloco.adaptation.train_config import load_train_config
    from metaloco.schema import ConfigError

    with pytest.raises(ConfigError, match=r"unknown training preset 'huge'; known presets are \['full', 'full_fall', 'full_fused', 'full_push', 'full_push_focus', 'full_push_focus_fixed', 'full_push_focus_readapt', 'full_push_focus_readapt100', 'full_push_focus_refit', 'full_push_focus_steady', 'full_replay', 'full_session9', 'full_track', 'full_track2', 'full_track3', 'full_track3_fall', 'full_track3_focus', 'smoke'\]"):
        load_train_config("huge")


def test_phase3_can_feed_pi_the_true_latent_in_some_iterations(smoke_run):
    """finetune_true_latent: the iterations drawn for it give pi mu(privileged), the others phi(history)."""
    cfg = load_run_config(smoke_run)
    probe = _ProbeEnv(cfg)
    phase1 = torch.load(smoke_run / "phase1" / "checkpoint.pt", weights_only=True)["alg"]
    phase2 = torch.load(smoke_run / "phase2" / "checkpoint.pt", weights_only=True)["alg"]
    obs = probe.obs.clone()
    obs["policy"], obs["privileged"] = torch.randn_like(obs["policy"]), torch.randn_like(obs["privileged"])
    obs["history"] = torch.randn_like(obs["history"])
    _, actor, student, _, _ = _torch_models(smoke_run)
    z_true, z_hat = actor.latent(obs), student.estimate(obs)
    for fraction, expected in ((1.0, z_true), (0.0, z_hat)):
        cfg.finetune_true_latent = fraction
        tuned = make_finetune_runner(cfg, probe, phase1, phase2).alg.actor
        with torch.no_grad():
            torch.testing.assert_close(tuned.get_latent(obs)[:, -cfg.latent_dim:], expected.detach())
    assert not any(p.requires_grad for p in tuned.adapter.parameters())


def test_phase2_takes_one_adam_step_per_gradient_length_of_rollout(tmp_path):
    """adapter_gradient_length splits each rollout into several Adam steps (0: one step per epoch)."""
    from metaloco.adaptation.train import train
    from metaloco.adaptation.train_config import load_train_config

    cfg = load_train_config("smoke")
    cfg.phase1_iterations, cfg.phase2_iterations, cfg.finetune_iterations, cfg.robust_iterations = 1, 1, 0, 0
    steps = {}
    for length in (0, 2):
        cfg.adapter_epochs, cfg.adapter_gradient_length = 3, length
        out = tmp_path / str(length)
        train(cfg, out, log=lambda line: None, export=False)
        state = torch.load(out / "phase2" / "checkpoint.pt", weights_only=True)["alg"]["optimizer_state_dict"]["state"]
        steps[length] = {int(s["step"]) for s in state.values()}
    assert steps == {0: {3}, 2: {3 * cfg.steps_per_env // 2}}


def test_a_gradient_length_that_does_not_divide_the_rollout_is_refused(tmp_path):
    from metaloco.adaptation.train_config import load_train_config
    from metaloco.paths import config_dir
    from metaloco.schema import ConfigError

    preset = tmp_path / "bad.yaml"
    preset.write_text((config_dir() / "train" / "smoke.yaml").read_text()
                      + "adapter_gradient_length: 3\n")
    with pytest.raises(ConfigError, match=r"adapter_gradient_length.*3 does not divide steps_per_env \(8\)"):
        load_train_config(str(preset))


def test_phase2_can_train_in_shorter_episodes_with_onsets_in_the_same_fraction():
    from metaloco.adaptation.train_config import load_train_config

    cfg = load_train_config("full")
    assert cfg.adapter_env() is cfg.env  # 0: phase 2 trains in the env of phase 1
    cfg.adapter_episode_s = 5.0
    short = cfg.adapter_env()
    assert short.episode_s == 5.0 and short.tasks.faults.onset_s == [0.0, 2.0]
    assert cfg.env.episode_s == 20.0 and cfg.env.tasks.faults.onset_s == [0.0, 8.0], "phase 1's env is untouched"
    assert short.tasks.faults.probability == cfg.env.tasks.faults.probability


def test_the_replay_buffer_keeps_the_newest_rows_and_samples_only_rows_it_holds():
    from metaloco.adaptation.updates import ReplayBuffer

    buffer = ReplayBuffer(5, {"a": 2, "b": 1})
    rows = lambda start, n: {"a": torch.arange(start, start + n).float()[:, None].repeat(1, 2),  # noqa: E731
                             "b": -torch.arange(start, start + n).float()[:, None]}
    buffer.add(rows(0, 3))
    assert buffer.size == 3
    buffer.add(rows(3, 4))  # wraps: 7 rows written into 5 places, rows 0 and 1 overwritten
    assert buffer.size == 5 and sorted(buffer.data[:, 0].tolist()) == [2.0, 3.0, 4.0, 5.0, 6.0]
    buffer.add(rows(10, 12))  # larger than the buffer: its newest 5 rows remain
    assert sorted(buffer.data[:, 0].tolist()) == [17.0, 18.0, 19.0, 20.0, 21.0]
    drawn = buffer.sample(200, torch.Generator().manual_seed(0))
    assert drawn["a"].shape == (200, 2) and drawn["b"].shape == (200, 1)
    assert set(drawn["a"][:, 0].tolist()) == {17.0, 18.0, 19.0, 20.0, 21.0}, "every held row is drawn, no other"
    torch.testing.assert_close(drawn["b"][:, 0], -drawn["a"][:, 1])  # the parts of a row stay together


def test_phase2_with_replay_keeps_the_rollouts_and_steps_per_batch(tmp_path):
    """adapter_replay: the buffer fills with every rollout up to its capacity; Adam takes
    adapter_epochs x rollout / adapter_batch steps per iteration, at adapter_learning_rate."""
    from metaloco.adaptation.train import make_distillation_runner, run_phase, train
    from metaloco.adaptation.train_config import load_train_config

    cfg = load_train_config("smoke")
    cfg.phase1_iterations, cfg.phase2_iterations, cfg.finetune_iterations, cfg.robust_iterations = 1, 3, 0, 0
    cfg.checkpoint_every = 1
    cfg.adapter_epochs, cfg.adapter_replay, cfg.adapter_replay_stride, cfg.adapter_batch = 2, 2, 2, 16
    cfg.adapter_learning_rate = 3e-4
    train(cfg, tmp_path, log=lambda line: None, export=False)
    saved = torch.load(tmp_path / "phase2" / "checkpoint.pt", weights_only=True)["alg"]["optimizer_state_dict"]
    per_iteration = 2 * cfg.steps_per_env * cfg.num_envs // 16
    assert {int(s["step"]) for s in saved["state"].values()} == {3 * per_iteration}
    assert {g["lr"] for g in saved["param_groups"]} == {3e-4}

    teacher = torch.load(tmp_path / "phase1" / "checkpoint.pt", weights_only=True)["alg"]["actor_state_dict"]
    sizes = []

    def runner(venv):
        made = make_distillation_runner(cfg, venv, teacher)
        update = made.alg.update
        made.alg.update = lambda: (update(), sizes.append(made.alg.replay_size))[0]
        return made

    run_phase("phase2", cfg, tmp_path / "again", 3, runner, history_length=cfg.history_length,
              fixed_difficulty=0.5, log=lambda line: None, keep_every=2)
    per_rollout = cfg.steps_per_env // 2 * cfg.num_envs
    assert sizes == [per_rollout, 2 * per_rollout, 2 * per_rollout], "two rollouts kept, then the oldest dropped"
    kept = sorted((tmp_path / "again" / "phase2" / "kept").iterdir())
    assert [k.name for k in kept] == ["it_00002.pt"], "keep_every=2 keeps iteration 2's checkpoint, not 1's or 3's"
    assert torch.load(kept[0], weights_only=True)["iteration"] == 2


def test_a_gradient_length_with_replay_is_refused(tmp_path):
    from metaloco.adaptation.train_config import load_train_config
    from metaloco.paths import config_dir
    from metaloco.schema import ConfigError

    preset = tmp_path / "bad.yaml"
    preset.write_text((config_dir() / "train" / "smoke.yaml").read_text()
                      + "adapter_gradient_length: 4\nadapter_replay: 10\n")
    with pytest.raises(ConfigError, match=r"adapter_gradient_length.*set with adapter_replay \(10\).*adapter_batch"):
        load_train_config(str(preset))


def test_the_replay_candidate_preset_is_full_session9_with_only_phase2_changed():
    """`full_replay` is compared against `full_session9` run for run: nothing but phase 2's options may differ."""
    from metaloco.adaptation.train_config import load_train_config
    from metaloco.schema import to_dict

    full, candidate = to_dict(load_train_config("full_session9")), to_dict(load_train_config("full_replay"))
    differ = {k for k in full if full[k] != candidate[k]}
    assert differ == {"name", "adapter_replay", "adapter_learning_rate"}, differ
    assert candidate["adapter_replay"] == candidate["phase2_iterations"], "the buffer holds every rollout of phase 2"


def test_the_tracking_candidate_preset_is_full_session9_with_only_the_tracking_weight_changed():
    """`full_track` is compared against `full_session9` run for run: only the linear tracking weight may differ."""
    from metaloco.adaptation.train_config import load_train_config
    from metaloco.schema import to_dict

    full, candidate = to_dict(load_train_config("full_session9")), to_dict(load_train_config("full_track"))
    assert {k for k in full if full[k] != candidate[k]} == {"name", "env"}
    env_full, env_cand = full["env"], candidate["env"]
    assert {k for k in env_full if env_full[k] != env_cand[k]} == {"reward"}
    reward_full, reward_cand = env_full["reward"], env_cand["reward"]
    assert {k for k in reward_full if reward_full[k] != reward_cand[k]} == {"tracking_lin_vel"}
    assert reward_cand["tracking_lin_vel"] == 2 * reward_full["tracking_lin_vel"]


def test_the_push_candidate_preset_is_full_session9_with_only_pushes_turned_on():
    """`full_push` is compared against `full_session9` run for run: only the training pushes may differ."""
    from metaloco.adaptation.train_config import load_train_config
    from metaloco.schema import to_dict

    full, candidate = to_dict(load_train_config("full_session9")), to_dict(load_train_config("full_push"))
    assert {k for k in full if full[k] != candidate[k]} == {"name", "env"}
    assert {k for k in full["env"] if full["env"][k] != candidate["env"][k]} == {"tasks"}
    tasks_full, tasks_cand = full["env"]["tasks"], candidate["env"]["tasks"]
    assert {k for k in tasks_full if tasks_full[k] != tasks_cand[k]} == {"pushes"}
    assert tasks_full["pushes"]["probability"] == 0.0 and tasks_cand["pushes"]["probability"] == 1.0


def test_the_focus_preset_is_full_push_with_only_phase_3_longer_and_focused():
    """`full_push_focus` shares phases 1, 2 and the robust baseline with `full_push`: only phase 3 differs."""
    from metaloco.adaptation.train_config import load_train_config
    from metaloco.schema import to_dict

    base, candidate = to_dict(load_train_config("full_push")), to_dict(load_train_config("full_push_focus"))
    assert {k for k in base if base[k] != candidate[k]} == {"name", "finetune_iterations", "finetune_fault_focus",
                                                           "robust_iterations"}
    assert base["finetune_fault_focus"] is None and candidate["finetune_fault_focus"] == 0.5
    assert (base["finetune_iterations"], candidate["finetune_iterations"]) == (300, 600)
    c = candidate  # the robust baseline keeps the same budget as phases 1-3
    assert c["robust_iterations"] == c["phase1_iterations"] + c["phase2_iterations"] + c["finetune_iterations"]
    assert candidate["curriculum"]["fault_focus"] == 0.0


def test_the_refit_preset_is_full_push_focus_with_only_phi_refitted_and_the_baseline_budget():
    """`full_push_focus_refit` trains phases 1-3 as `full_push_focus` does (so, on the same numerics, the same pi);
    only the re-fit of phi after phase 3 and the robust baseline's matching budget differ."""
    from metaloco.adaptation.train_config import load_train_config
    from metaloco.schema import to_dict

    base, candidate = to_dict(load_train_config("full_push_focus")), to_dict(load_train_config("full_push_focus_refit"))
    assert {k for k in base if base[k] != candidate[k]} == {"name", "readapt_iterations", "robust_iterations"}
    c = candidate
    assert (base["readapt_iterations"], c["readapt_iterations"], c["readapt_every"]) == (0, 100, 0)
    assert c["robust_iterations"] == (c["phase1_iterations"] + c["phase2_iterations"] + c["finetune_iterations"]
                                      + c["readapt_iterations"])


def test_the_track3_preset_is_full_with_phase_3_paying_more_for_tracking():
    """`full_track3` differs from `full` only in phase 3's tracking weight: phases 1-2 and the robust baseline
    train in `full`'s env, phase 3 in one whose linear-velocity tracking term weighs 3.0. The other phase-3
    diagnostics (`full_track3_focus`, `full_track2`, `full_track3_fall`, `full_fall`, `full_fused`) differ from
    `full` only in what they name."""
    from metaloco.adaptation.train_config import load_train_config
    from metaloco.schema import to_dict

    full, track3 = load_train_config("full"), load_train_config("full_track3")
    base, candidate = to_dict(full), to_dict(track3)
    assert {k for k in base if base[k] != candidate[k]} == {"name", "finetune_tracking_lin_vel"}
    assert full.finetune_env() is full.env, "without the option phase 3 trains in env itself"
    assert (track3.env.reward.tracking_lin_vel, track3.finetune_env().reward.tracking_lin_vel) == (1.5, 3.0)
    assert to_dict(track3.finetune_env()) == {**to_dict(track3.env),
                                              "reward": {**to_dict(track3.env.reward), "tracking_lin_vel": 3.0}}
    focus = to_dict(load_train_config("full_track3_focus"))
    assert {k for k in base if base[k] != focus[k]} == {"name", "finetune_tracking_lin_vel", "finetune_fault_focus"}
    assert (candidate["finetune_fault_focus"], focus["finetune_fault_focus"]) == (0.5, 1.0)
    track2 = load_train_config("full_track2")
    assert {k for k in base if base[k] != to_dict(track2)[k]} == {"name", "finetune_tracking_lin_vel"}
    assert (track2.env.reward.tracking_lin_vel, track2.finetune_env().reward.tracking_lin_vel) == (1.5, 2.25)
    fall = load_train_config("full_track3_fall")
    assert {k for k in base if base[k] != to_dict(fall)[k]} == {"name", "finetune_tracking_lin_vel",
                                                                 "finetune_termination"}
    assert to_dict(fall.finetune_env()) == {**to_dict(fall.env), "reward": {
        **to_dict(fall.env.reward), "tracking_lin_vel": 3.0, "termination": -20.0}}
    assert fall.env.reward.termination == -5.0
    dear = load_train_config("full_fall")
    assert {k for k in base if base[k] != to_dict(dear)[k]} == {"name", "finetune_termination"}
    assert to_dict(dear.finetune_env()) == {**to_dict(dear.env), "reward": {**to_dict(dear.env.reward),
                                                                             "termination": -20.0}}
    fused = load_train_config("full_fused")
    assert {k for k in base if base[k] != to_dict(fused)[k]} == {"name", "finetune_latent_feed"}
    assert (full.finetune_latent_feed, fused.finetune_latent_feed) == ("raw", "fused")


def test_phase3_takes_its_own_step_size_schedule_and_entropy_bonus(tmp_path):
    """finetune_schedule/learning_rate/entropy_coef reach phase 3's PPO and leave phase 1's alone; a fixed
    schedule keeps the step size through the updates (the adaptive one moves it after every mini-batch);
    finetune_keep_every keeps phase 3's checkpoints."""
    from metaloco.adaptation.train import train
    from metaloco.adaptation.train_config import load_train_config

    cfg = load_train_config("smoke")
    cfg.phase1_iterations, cfg.phase2_iterations, cfg.finetune_iterations, cfg.robust_iterations = 2, 1, 2, 0
    cfg.checkpoint_every = 1
    cfg.finetune_schedule, cfg.finetune_learning_rate, cfg.finetune_entropy_coef = "fixed", 3e-6, 0.0
    cfg.finetune_keep_every = 2
    assert (cfg.finetune_ppo().schedule, cfg.finetune_ppo().learning_rate, cfg.finetune_ppo().entropy_coef) == (
        "fixed", 3e-6, 0.0)
    assert (cfg.ppo.schedule, cfg.ppo.learning_rate) == ("adaptive", 1e-3), "the overrides do not touch ppo"
    train(cfg, tmp_path, log=lambda line: None, export=False)
    lr = {ph: {g["lr"] for g in torch.load(tmp_path / ph / "checkpoint.pt", weights_only=True)["alg"]
               ["optimizer_state_dict"]["param_groups"]} for ph in ("phase1", "phase3")}
    assert lr["phase3"] == {3e-6}, "two fixed-schedule updates kept the step size"
    assert lr["phase1"] != {1e-3}, "phase 1's adaptive schedule moved its step size"
    kept = sorted(p.name for p in (tmp_path / "phase3" / "kept").iterdir())
    assert kept == ["it_00002.pt"], "finetune_keep_every=2 keeps phase 3's iteration 2"
    assert not (tmp_path / "phase1" / "kept").exists(), "and no other phase's"
    probe = _ProbeEnv(cfg)
    phase1 = torch.load(tmp_path / "phase1" / "checkpoint.pt", weights_only=True)["alg"]
    phase2 = torch.load(tmp_path / "phase2" / "checkpoint.pt", weights_only=True)["alg"]
    tuned = make_finetune_runner(cfg, probe, phase1, phase2).alg
    assert (tuned.schedule, tuned.learning_rate, tuned.entropy_coef) == ("fixed", 3e-6, 0.0)
    base = make_ppo_runner(cfg, probe, rma=True).alg
    assert (base.schedule, base.learning_rate, base.entropy_coef) == ("adaptive", 1e-3, cfg.ppo.entropy_coef)


def test_a_bad_phase3_schedule_is_refused(tmp_path):
    from metaloco.adaptation.train_config import load_train_config
    from metaloco.schema import ConfigError

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nfinetune_schedule: cosine\n")
    with pytest.raises(ConfigError, match=r"finetune_schedule.*'cosine'.*\['adaptive', 'fixed'\]"):
        load_train_config(str(bad))


def test_the_steady_presets_are_the_shipped_one_with_only_phase_3_steps_changed():
    """`full_push_focus_steady` and `_fixed` share phases 1, 2 and the robust baseline with `full_push_focus`."""
    from metaloco.adaptation.train_config import load_train_config
    from metaloco.schema import to_dict

    base = to_dict(load_train_config("full_push_focus"))
    for name, step in (("full_push_focus_steady", 1e-5), ("full_push_focus_fixed", 5e-5)):
        candidate = to_dict(load_train_config(name))
        assert {k for k in base if base[k] != candidate[k]} == {"name", "finetune_schedule", "finetune_learning_rate",
                                                               "finetune_entropy_coef"}, name
        assert (candidate["finetune_schedule"], candidate["finetune_learning_rate"],
                candidate["finetune_entropy_coef"]) == ("fixed", step, 0.0), name


def test_full_push_focus_is_the_full_preset_under_its_old_name():
    """Sessions 25-29 recorded their commands with `--preset full_push_focus`: that name still trains `full`."""
    from metaloco.adaptation.train_config import load_train_config
    from metaloco.schema import to_dict

    full, old = to_dict(load_train_config("full")), to_dict(load_train_config("full_push_focus"))
    assert old.pop("name") == "full_push_focus" and full.pop("name") == "full"
    assert old == full


def test_a_preset_extends_another_key_by_key(tmp_path):
    from metaloco.adaptation.train_config import load_train_config
    from metaloco.schema import to_dict

    path = tmp_path / "mine.yaml"
    path.write_text("extends: full\nname: mine\nseed: 3\nenv: {tasks: {faults: {probability: 0.5}}}\n")
    base, mine = to_dict(load_train_config("full")), to_dict(load_train_config(str(path)))
    assert (mine["name"], mine["seed"], mine["env"]["tasks"]["faults"]["probability"]) == ("mine", 3, 0.5)
    assert mine["env"]["tasks"]["pushes"] == base["env"]["tasks"]["pushes"], "tables are merged, not replaced"
    assert mine["env"]["tasks"]["faults"]["held_out_joints"] == base["env"]["tasks"]["faults"]["held_out_joints"]
    for key in ("name", "seed", "env"):
        mine.pop(key), base.pop(key)
    assert mine == base


@pytest.mark.parametrize("extends, problem", [
    ("nope", r"'extends': unknown training preset 'nope'; known presets are \['full'"),
    ("3", r"'extends': 3 is not a preset name"),
    ("SELF", r"'extends': '.*loop.yaml' extends this preset in turn"),
])
def test_a_bad_extends_names_the_file_and_what_was_expected(tmp_path, extends, problem):
    from metaloco.adaptation.train_config import load_train_config
    from metaloco.schema import ConfigError

    path = tmp_path / "loop.yaml"
    path.write_text(f"extends: {str(path) if extends == 'SELF' else extends}\nname: loop\n")
    with pytest.raises(ConfigError, match=problem) as err:
        load_train_config(str(path))
    assert str(path) in str(err.value)


def test_phase3_on_the_fused_estimate_acts_and_updates_on_the_same_latents(smoke_run):
    """`finetune_latent_feed: fused`: in the rollout pi acts on the fused latents (not phi's raw output), the
    storage keeps the env's groups only, the update reads the rollout's latents back (so each stored log-prob is
    that of the latent the action was drawn with), and an ended episode restarts its filters."""
    from tensordict import TensorDict

    from metaloco.adaptation.networks import FROZEN_ESTIMATE
    from metaloco.adaptation.prior import LatentPrior
    from metaloco.adaptation.train_config import load_train_config
    from metaloco.sim.vec_env import SubprocVecEnv

    cfg = load_train_config("smoke")
    cfg.finetune_latent_feed, cfg.symmetry, cfg.steps_per_env = "fused", True, 110  # episodes end at step 100
    phase1 = torch.load(smoke_run / "phase1" / "checkpoint.pt", weights_only=True)["alg"]
    phase2 = torch.load(smoke_run / "phase2" / "checkpoint.pt", weights_only=True)["alg"]
    with pytest.raises(ValueError, match="needs the latent prior"):
        make_finetune_runner(cfg, _ProbeEnv(cfg), phase1, phase2)
    venv = SubprocVecEnv(cfg.env, cfg.num_envs, 1, seed=0, history_length=cfg.history_length)
    try:
        runner = make_finetune_runner(cfg, venv, phase1, phase2, prior=LatentPrior.load(smoke_run / "prior.json"))
        alg, feed = runner.alg, runner.fused_feed
        assert feed.every == 5 and feed.state.shape == (cfg.num_envs, 2, cfg.latent_dim)
        obs = venv.get_observations()
        with torch.no_grad():
            for _ in range(cfg.steps_per_env):
                actions = alg.act(obs)
                assert FROZEN_ESTIMATE not in alg.transition.observations.keys()
                obs, rewards, dones, extras = venv.step(actions)
                alg.process_env_step(obs, rewards, dones, extras)
            assert bool((feed.steps < cfg.steps_per_env).all()), "every env's episode ended and its filter restarted"
            stored = alg.storage.observations.flatten(0, 1)
            fed = torch.stack(feed.rollout).flatten(0, 1)
            raw = alg.actor.estimate(TensorDict({"history": stored["history"]}, batch_size=stored.batch_size))
            assert not torch.allclose(fed[:, :cfg.latent_dim], raw, atol=1e-3), "pi is fed the fused latent, not phi's"
            replay = stored.clone()
            replay[FROZEN_ESTIMATE] = fed
            alg.actor(replay, stochastic_output=True)
            log_prob = alg.actor.get_output_log_prob(alg.storage.actions.flatten(0, 1))
            torch.testing.assert_close(log_prob.view(-1), alg.storage.actions_log_prob.view(-1), atol=1e-5, rtol=0)
            alg.compute_returns(obs)
        alg.update()
        assert feed.rollout == [] and FROZEN_ESTIMATE not in alg.storage.observations.keys()
    finally:
        venv.close()


def test_the_fused_feed_with_true_latent_iterations_is_refused(tmp_path):
    from metaloco.adaptation.train_config import load_train_config
    from metaloco.schema import ConfigError

    bad = tmp_path / "bad.yaml"
    bad.write_text("extends: full_fused\nname: bad\nfinetune_true_latent: 0.2\n")
    with pytest.raises(ConfigError, match=r"finetune_latent_feed.*'fused' is set with finetune_true_latent \(0.2\)"):
        load_train_config(str(bad))
    bad.write_text("name: bad\nfinetune_latent_feed: filtered\n")
    with pytest.raises(ConfigError, match=r"finetune_latent_feed.*'filtered'.*\['raw', 'fused'\]"):
        load_train_config(str(bad))


def test_a_run_trained_on_the_fused_estimate_exports_and_runs(tmp_path):
    """The smoke preset with phase 3 on the fused feed trains end to end and exports a policy onnxruntime runs."""
    from metaloco.adaptation.train import train
    from metaloco.adaptation.train_config import load_train_config

    cfg = load_train_config("smoke")
    cfg.finetune_latent_feed, cfg.robust_iterations = "fused", 1
    lines: list[str] = []
    train(cfg, tmp_path, log=lines.append)
    assert (tmp_path / "prior.json").is_file() and any(line.startswith("[export]") for line in lines)
    policy = load_policy(tmp_path / "export", load_robot("a1"))
    action = policy(np.zeros(policy.obs_dim, dtype=np.float32), np.zeros(cfg.latent_dim))
    assert action.shape[-1] == policy.n_actions and np.all(np.isfinite(action))
