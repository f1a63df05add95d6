"""metaloco: one ROS 2 ament_python package, also pip-installable.

The top-level folders sim/, adaptation/, hardware/ and ros_pkgs/ are the
subpackages metaloco.sim, metaloco.adaptation, metaloco.hardware and
metaloco.ros_pkgs (package_dir maps them), so `import metaloco.sim` works
from a colcon install, a wheel and an editable checkout alike.
"""

from glob import glob

from setuptools import setup

PACKAGE = "metaloco"
LAYERS = ("sim", "adaptation", "hardware", "ros_pkgs")


def share(folder: str, pattern: str) -> tuple[str, list[str]]:
    return (f"share/{PACKAGE}/{folder}", sorted(glob(f"{folder}/{pattern}")))


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=[PACKAGE] + [f"{PACKAGE}.{layer}" for layer in LAYERS],
    package_dir={PACKAGE: PACKAGE, **{f"{PACKAGE}.{layer}": layer for layer in LAYERS}},
    package_data={f"{PACKAGE}.hardware": ["PROTOCOL.md"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        share("launch", "*.launch.xml"),
        share("config", "*.yaml"),
        share("config/robots", "*.yaml"),
        share("config/scenarios", "*.yaml"),
        share("models/a1", "*"),
    ],
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="metaloco",
    maintainer_email="metaloco@example.invalid",
    description="Meta-trained legged locomotion with online adaptation, from pybullet to ROS 2 robots.",
    license="BSD-3-Clause",
    python_requires=">=3.10",
    entry_points={
        "console_scripts": [
            "metaloco = metaloco.cli:main",
            "policy_node = metaloco.ros_pkgs.policy_node:main",
            "adaptation_node = metaloco.ros_pkgs.adaptation_node:main",
            "robot_bridge = metaloco.ros_pkgs.robot_bridge:main",
            "trial_runner = metaloco.ros_pkgs.trial_runner:main",
            "recorder = metaloco.ros_pkgs.recorder:main",
        ],
    },
)
