"""`adaptation_node`: estimates the latent online and hands it to the policy (RMA, Kumar et al. 2021).

Every observation the policy made arrives on `policy/obs_action` (a policy waiting for a live latent
sends its observations without an action) and goes into an `ObsHistory`
(oldest first, zeros before the start, as in training). At ~10 Hz the adapter (`adapter.onnx`)
reads the history, `LatentEstimator` fuses its raw estimate with the simulator prior
(`prior.json`), and the node publishes a latent on `adaptation/latent` and what the
estimator concluded (change detected, confidence, suspected joint) on `adaptation/status`. Which
latent (`latent_source`, see estimator.LATENT_SOURCES): the fused estimate by default, or the adapter's
raw output, which a phase-3 policy is fine-tuned on unless its preset sets `finetune_latent_feed: fused`.

It is a side branch: the policy loop never waits for it. If this node stops, the policy keeps the
last latent it received and says so in its diagnostics; a policy fine-tuned on this node's estimate
(metadata `latent_input: adapter`, phase 3) stops commanding instead.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from std_msgs.msg import Float32MultiArray

from metaloco.adaptation.estimator import LatentEstimator, policy_latent
from metaloco.adaptation.prior import LatentPrior
from metaloco.adaptation.runtime import load_adapter, load_policy
from metaloco.hardware.robot_config import load_robot
from metaloco.ros_pkgs.messages import (
    ERROR,
    OK,
    WARN,
    MessageError,
    diagnostic_array,
    float_array,
    split_float_array,
    status,
)
from metaloco.ros_pkgs.params import AdaptationNodeConfig, declare, model_path
from metaloco.ros_pkgs.qos import qos_for, recording_qos
from metaloco.schema import ConfigError
from metaloco.sim.history import ObsHistory


class AdaptationNode(Node):
    """History from `policy/obs_action` -> adapter -> prior fusion -> `adaptation/latent`, `adaptation/status`.

    Parameters: see `AdaptationNodeConfig` (config/nodes.yaml).

    Raises:
        ConfigError: A model file is missing or the adapter, policy and prior do not fit together.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("adaptation_node", **kwargs)
        self.cfg = declare(self, AdaptationNodeConfig)
        robot = load_robot(self.cfg.robot)
        folder = model_path(self.cfg.model_dir, robot.name)
        policy = load_policy(folder, robot)  # the sizes the adapter must fit, and the robot check
        self.adapter = load_adapter(folder, policy)
        self.prior = LatentPrior.load(folder / "prior.json")
        if self.prior.dim != policy.latent_dim:
            raise ConfigError(str(folder / "prior.json"), "mean", f"prior has {self.prior.dim} dimensions; "
                              f"policy.onnx takes a latent of {policy.latent_dim}")
        self.estimator = LatentEstimator(self.prior)
        self.history = ObsHistory(self.adapter.history_length, self.adapter.obs_dim)
        self.updates = 0
        """Latents published."""
        self.rejected = 0
        """obs_action messages of the wrong size."""
        self.adapter_us = 0.0
        self.last_published: tuple | None = None
        """(estimate, latent published from it), set together."""
        self._last_obs_t: float | None = None
        self._waiting = "no policy/obs_action yet"

        self._latent = self.create_publisher(Float32MultiArray, "adaptation/latent", qos_for("adaptation/latent"))
        self._status = self.create_publisher(DiagnosticArray, "adaptation/status", qos_for("adaptation/status"))
        self._diagnostics = self.create_publisher(DiagnosticArray, "diagnostics", qos_for("diagnostics"))
        # A deep queue: every observation belongs in the history, even when a callback runs late.
        self.create_subscription(Float32MultiArray, "policy/obs_action", self._on_obs_action,
                                 recording_qos("policy/obs_action", depth=self.adapter.history_length))
        self.create_timer(1.0 / self.cfg.rate_hz, self._update)
        self.create_timer(self.cfg.diagnostics_period_s, self.publish_diagnostics)
        self.get_logger().info(f"adapting from {folder / 'adapter.onnx'}: history {self.adapter.history_length} x "
                               f"{self.adapter.obs_dim}, latent {policy.latent_dim}, {self.cfg.rate_hz:g} Hz, "
                               f"publishing the {self.cfg.latent_source} estimate")

    def _on_obs_action(self, msg: Float32MultiArray) -> None:
        try:
            obs = split_float_array(msg).get("obs")
        except MessageError:
            obs = None
        if obs is None or len(obs) != self.adapter.obs_dim:
            self.rejected += 1
            self.get_logger().warning(f"policy/obs_action ignored: expected an 'obs' part of {self.adapter.obs_dim} "
                                   "values", throttle_duration_sec=5.0)
            return
        now = time.monotonic()
        if self._last_obs_t is not None and now - self._last_obs_t > self.cfg.gap_reset_s:
            self.history.reset()  # the robot's past before the gap is not the past the adapter was trained on
            self.estimator.reset()
        self._last_obs_t = now
        self.history.push(obs)

    def _update(self) -> None:
        now = time.monotonic()
        if self._last_obs_t is None:
            return
        if now - self._last_obs_t > self.cfg.gap_reset_s:
            self._waiting = f"policy/obs_action silent for {now - self._last_obs_t:.1f} s"
            return
        if self.history.count < self.cfg.min_observations:
            self._waiting = f"filling the history ({self.history.count}/{self.cfg.min_observations})"
            return
        t0 = time.perf_counter()
        raw = self.adapter(self.history.array())
        self.adapter_us = (time.perf_counter() - t0) * 1e6
        if not np.all(np.isfinite(raw)):
            self._waiting = "adapter output is not finite"
            return
        self._waiting = ""
        est = self.estimator.update(raw, now)
        latent = policy_latent(est, self.cfg.latent_source)
        self.last_published = (est, latent)
        self.updates += 1
        self._latent.publish(float_array({"latent": latent}))
        if est.change_detected:
            self.get_logger().info(f"change detected (jump {est.details['jump']:.1f}); suspected joint: "
                                   f"{est.suspected_joint or 'none'}", throttle_duration_sec=1.0)
        level = WARN if est.change_detected or est.suspected_joint else OK
        message = "change detected" if est.change_detected else "tracking"
        if est.suspected_joint:
            message += f"; suspected joint {est.suspected_joint}"
        values = {"confidence": est.confidence, "change_detected": est.change_detected,
                  "changes": self.estimator.changes, "suspected_joint": est.suspected_joint or "",
                  "clamped": est.clamped, "mahalanobis2": est.mahalanobis2, "observations": self.history.count,
                  "latent_source": self.cfg.latent_source}
        self._status.publish(diagnostic_array(self.get_clock().now().to_msg(),
                                              status("adaptation", level, message, values)))

    def publish_diagnostics(self) -> None:
        """The node's health on `diagnostics`."""
        level = OK if not self._waiting else (ERROR if "not finite" in self._waiting else WARN)
        message = "adapting" if not self._waiting else self._waiting
        values = {"updates": self.updates, "rejected": self.rejected, "adapter_us": self.adapter_us,
                  "changes": self.estimator.changes, "observations": self.history.count}
        self._diagnostics.publish(diagnostic_array(self.get_clock().now().to_msg(),
                                                   status(self.get_name(), level, message, values)))


def main(args: list[str] | None = None) -> int:
    """Entry point of the `adaptation_node` console script."""
    from metaloco.ros_pkgs.launch_xml import run_node

    return run_node(AdaptationNode, "adaptation_node", args)


if __name__ == "__main__":
    raise SystemExit(main())
