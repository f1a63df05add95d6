"""SubprocVecEnv: the rsl_rl VecEnv contract, auto-reset, and one real PPO iteration through it."""

import torch

from metaloco.sim.env import EnvConfig
from metaloco.sim.vec_env import SubprocVecEnv


def test_vec_env_shapes_resets_and_determinism():
    cfg = EnvConfig(episode_s=0.2)  # 10 steps per episode: resets happen
    runs = []
    for workers in (1, 2):
        with SubprocVecEnv(cfg, num_envs=4, workers=workers, seed=7) as venv:
            obs = venv.get_observations()
            assert obs["policy"].shape == (4, venv.num_obs)
            assert obs["privileged"].shape == (4, venv.num_privileged)
            gen = torch.Generator().manual_seed(0)
            trace, dones, timeouts = [], 0, 0
            for _ in range(25):
                td, rew, done, extras = venv.step(torch.randn(4, venv.num_actions, generator=gen) * 0.3)
                trace.append(td["policy"].clone())
                dones += int(done.sum())
                timeouts += int(extras["time_outs"].sum())
                assert rew.shape == (4,) and done.dtype == torch.bool
            assert dones >= 8 and timeouts >= 1
            assert len(venv.completed_returns) == dones
            runs.append(torch.stack(trace))
    # The split of envs over workers does not change what each env does.
    torch.testing.assert_close(runs[0], runs[1])


def test_ppo_iteration_runs_on_the_vec_env(tmp_path):
    from rsl_rl.runners import OnPolicyRunner

    with SubprocVecEnv(EnvConfig(), num_envs=4, workers=2) as venv:
        cfg = {
            "num_steps_per_env": 8, "save_interval": 100, "obs_groups": {"actor": ["policy"], "critic": ["policy", "privileged"]},
            "algorithm": {"class_name": "PPO", "num_learning_epochs": 1, "num_mini_batches": 2, "learning_rate": 1e-3,
                          "clip_param": 0.2, "gamma": 0.99, "lam": 0.95, "value_loss_coef": 1.0, "entropy_coef": 0.01,
                          "max_grad_norm": 1.0, "use_clipped_value_loss": True, "schedule": "fixed", "desired_kl": 0.01},
            "actor": {"class_name": "MLPModel", "hidden_dims": [32], "activation": "elu",
                      "distribution_cfg": {"class_name": "GaussianDistribution", "init_std": 1.0}},
            "critic": {"class_name": "MLPModel", "hidden_dims": [32], "activation": "elu"},
        }
        runner = OnPolicyRunner(venv, cfg, log_dir=None)
        before = [p.clone() for p in runner.alg.get_policy().parameters()]
        runner.learn(num_learning_iterations=1)
        after = list(runner.alg.get_policy().parameters())
        assert any(not torch.equal(a, b) for a, b in zip(before, after))
