"""rclpy nodes: thin adapters between ROS 2 topics and the layers below."""
