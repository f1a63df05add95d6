"""Keep ROS 2 traffic on this machine unless the user says otherwise.

DESIGN.md, "Discovery and isolation": every process that starts rclpy in tests,
benchmarks or the CLI discovers peers on localhost only. rcl reads these
variables in `rclpy.init()`, so call `ensure_localhost_discovery()` before it.
"""

from __future__ import annotations

import os

#: Discovery range for Jazzy and later distros.
DISCOVERY_RANGE_VAR = "ROS_AUTOMATIC_DISCOVERY_RANGE"
#: The older switch (Humble, Iron); harmless on newer distros.
LOCALHOST_ONLY_VAR = "ROS_LOCALHOST_ONLY"


def ensure_localhost_discovery() -> dict[str, str]:
    """Restrict DDS discovery to localhost, keeping any value the user already set.

    Returns:
        The two variables as they are after the call.
    """
    os.environ.setdefault(DISCOVERY_RANGE_VAR, "LOCALHOST")
    os.environ.setdefault(LOCALHOST_ONLY_VAR, "1")
    return {name: os.environ[name] for name in (DISCOVERY_RANGE_VAR, LOCALHOST_ONLY_VAR)}
