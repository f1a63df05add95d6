"""pybullet worlds, the task family, LocomotionEnv, vectorised envs and the scenario runner.

Imports nothing from ROS. Submodules that need pybullet import it themselves, so that
`metaloco.sim.gait` and `metaloco.sim.observation` stay importable on a robot without it.
"""
