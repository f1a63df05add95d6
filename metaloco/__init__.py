"""metaloco: meta-trained legged locomotion with online adaptation, from pybullet to ROS 2 robots."""

__version__ = "0.1.0"
