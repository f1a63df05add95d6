"""Session-wide test settings: ROS 2 traffic stays on loopback, in a domain of this session's own."""

import os

# Training pins MKL's code path (adaptation/numerics.py); it must be set before this process's first matrix product.
os.environ.setdefault("MKL_CBWR", "COMPATIBLE")
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_LOCALHOST_ONLY", "1")
# A domain per test session, so parallel runs on one machine never see each other.
os.environ["ROS_DOMAIN_ID"] = str(1 + os.getpid() % 100)
