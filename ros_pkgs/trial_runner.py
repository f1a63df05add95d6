"""`trial_runner` node: plays a scenario into the running graph, on `cmd_vel` and `sim/events`.

It waits until the graph is ready (the robot bridge active, with policy commands reaching it; the
adaptation latent flowing if asked), then plays the scenario (`sim.playback.ScenarioPlayer`): the
command in force on `cmd_vel` every `1/rate_hz`, each event once at its time, and it stops sending
at the scenario's end (the policy's `cmd_vel_timeout_s` then brings the robot to a standstill).

Clocks. In sim (`hardware:=false`) the scenario runs on the simulator's `/clock`, which the sim
bridge publishes every control period: a lock-step simulator slowed down by a busy machine slows
the scenario down with it, so events land at their simulated times. On a robot (`hardware:=true`)
it runs on the wall clock, and an event is a prompt to the operator (logged as a warning, with what
to do) that is also published on `sim/events` as a mark in the recording; no hardware bridge
applies it.

Run it with `trial_runner --ros-args -p scenario:=fr_knee_locked` beside a launched graph; it exits
0 when the scenario is done, 1 if the graph never became ready (naming what was missing). `metaloco
trial` runs the same node in-process, next to the graph and a recorder.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Twist
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rosgraph_msgs.msg import Clock as ClockMsg
from std_msgs.msg import Float32MultiArray, String

from metaloco.ros_pkgs.messages import status_values
from metaloco.ros_pkgs.params import declare
from metaloco.ros_pkgs.qos import STATUS_QOS, qos_for
from metaloco.schema import ConfigError, spec
from metaloco.sim.playback import ScenarioPlayer, describe_event, setup_events
from metaloco.sim.scenario import Event, load_scenario

#: A robot bridge status older than this (wall s) means the bridge is gone.
BRIDGE_STATUS_MAX_AGE_S = 3.0
#: The latest adaptation/latent must be younger than this (wall s) for the graph to count as ready.
LATENT_MAX_AGE_S = 1.0


@dataclass
class TrialRunnerConfig:
    """Parameters of `trial_runner`."""

    scenario: str = spec("", doc="Scenario: a YAML path or a name under config/scenarios/.")
    hardware: bool = spec(False, doc="A robot, not the simulator: wall clock, events are operator prompts.")
    autostart: bool = spec(True, doc="Start by itself once the graph is ready (false: wait for begin()).")
    rate_hz: float = spec(50.0, range=(1.0, 1000.0), doc="cmd_vel publishing rate (on the trial's clock).")
    settle_s: float = spec(1.0, range=(0.0, 60.0),
                           doc="How long the graph must have been ready before the scenario's time 0.")
    ready_timeout_s: float = spec(60.0, range=(1.0, 3600.0),
                                  doc="autostart: wall seconds to wait for a ready graph before giving up.")
    wait_for_latent: bool = spec(False, doc="Ready only once adaptation/latent flows (adaptation on).")
    bridge_name: str = spec("robot_bridge", doc="Name of the robot bridge's status on diagnostics.")


class TrialRunner(Node):
    """Plays one scenario on `cmd_vel` and `sim/events` once the graph is ready.

    Parameters: see `TrialRunnerConfig`.

    Attributes:
        state: "waiting" (for a ready graph), "running", "done" or "failed" (see `failure`).

    Raises:
        ConfigError: No scenario, or a scenario file that does not load (a bad joint name, ...).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("trial_runner", **kwargs)
        self.cfg = declare(self, TrialRunnerConfig)
        if not self.cfg.scenario:
            raise ConfigError(f"node '{self.get_name()}' parameters", "scenario",
                              "required: a scenario file or name (e.g. -p scenario:=fr_knee_locked)")
        self.scenario = load_scenario(self.cfg.scenario)
        self.player = ScenarioPlayer(self.scenario)
        self.hardware = self.cfg.hardware
        self.state = "waiting"
        self.failure = ""
        self.published = {"cmd_vel": 0, "sim/events": 0}
        """Messages sent while the scenario ran, per topic (setup events not included)."""
        self.setup_published = 0
        """Setup events sent before time 0 (the scenario's starting terrain and dynamics)."""
        self.event_log: list[dict[str, Any]] = []
        """Each event as sent: scenario time, clock time, and the JSON."""
        self.missing_now: list[str] = ["not checked yet"]
        """What keeps the graph from being ready, as of the last check."""
        self.ready = False
        """The graph has been ready for `settle_s`."""
        self.t0: float | None = None
        """The trial clock's reading at scenario time 0."""
        self.t_end: float | None = None
        self.scenario_t = 0.0
        self._clock_s: float | None = None
        self._bridge: dict[str, Any] | None = None
        self._bridge_commands: list[int] = []
        self._latent_t: float | None = None
        self._ready_since: float | None = None
        self._setup_sent = False
        self._start_requested = False
        self._next_cmd_t = 0.0
        self._created = time.monotonic()

        self._cmd_vel = self.create_publisher(Twist, "cmd_vel", qos_for("cmd_vel"))
        self._events = self.create_publisher(String, "sim/events", qos_for("sim/events"))
        self.create_subscription(DiagnosticArray, "diagnostics", self._on_diagnostics, STATUS_QOS)
        if self.cfg.wait_for_latent:
            self.create_subscription(Float32MultiArray, "adaptation/latent", self._on_latent,
                                     qos_for("adaptation/latent"))
        wall = Clock(clock_type=ClockType.STEADY_TIME)
        if self.hardware:
            self.create_timer(1.0 / self.cfg.rate_hz, lambda: self._tick(time.monotonic()), clock=wall)
        else:
            self.create_subscription(ClockMsg, "/clock", self._on_clock, STATUS_QOS)
        self.create_timer(0.1, self._check_ready, clock=wall)
        self.get_logger().info(f"scenario '{self.scenario.name}' ({self.scenario.duration_s:g} s, "
                               f"{len(self.scenario.events)} events) on the "
                               f"{'wall clock (hardware)' if self.hardware else 'simulator clock'}; waiting for "
                               "a ready graph")

    # ------------------------------------------------------------ inputs
    def _on_clock(self, msg: ClockMsg) -> None:
        self._clock_s = msg.clock.sec + msg.clock.nanosec * 1e-9
        self._tick(self._clock_s)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for st in msg.status:
            if st.name == self.cfg.bridge_name:
                values = status_values(st)
                self._bridge = {"seen": time.monotonic(), "mode": values.get("mode", "?"), "message": st.message}
                if values.get("commands", "").isdigit():
                    self._bridge_commands = (self._bridge_commands + [int(values["commands"])])[-2:]

    def _on_latent(self, _msg: Float32MultiArray) -> None:
        self._latent_t = time.monotonic()

    # --------------------------------------------------------- readiness
    def now(self) -> float | None:
        """The trial clock (s): the simulator's /clock (None before the first), or the wall clock on hardware."""
        return time.monotonic() if self.hardware else self._clock_s

    def missing(self) -> list[str]:
        """What keeps the graph from being ready to run the trial, one sentence each (empty when ready)."""
        out = []
        name = self.cfg.bridge_name
        if not self.hardware and self._clock_s is None:
            out.append("no /clock: no simulator bridge is running (on a robot, set hardware:=true)")
        bridge = self._bridge
        if bridge is None:
            out.append(f"no '{name}' status on diagnostics: the robot bridge is not running")
        elif time.monotonic() - bridge["seen"] > BRIDGE_STATUS_MAX_AGE_S:
            out.append(f"no '{name}' status on diagnostics for {time.monotonic() - bridge['seen']:.1f} s: "
                       "the robot bridge stopped")
        elif bridge["mode"] != "active":
            hint = " (arm it: ~/stand, then ~/activate)" if self.hardware and bridge["mode"] in ("passive", "stand") \
                else ""
            out.append(f"{name} is '{bridge['mode']}', not 'active' ({bridge['message']}){hint}")
        elif len(self._bridge_commands) < 2 or self._bridge_commands[1] <= self._bridge_commands[0]:
            out.append(f"{name} receives no joint_commands: the policy is not commanding the robot")
        if self._cmd_vel.get_subscription_count() < 1:
            out.append("nobody subscribes to cmd_vel: the policy node is not running")
        if not self.hardware and self._events.get_subscription_count() < 1:
            out.append("nobody subscribes to sim/events: the simulator bridge cannot take the scenario's events")
        if self.cfg.wait_for_latent:
            if self._latent_t is None:
                out.append("no adaptation/latent: the adaptation node is not running or not yet adapting")
            elif time.monotonic() - self._latent_t > LATENT_MAX_AGE_S:
                out.append(f"adaptation/latent silent for {time.monotonic() - self._latent_t:.1f} s")
        return out

    def _check_ready(self) -> None:
        if self.state != "waiting":
            return
        bridge_listens = self.hardware or self._events.get_subscription_count() > 0
        if not self._setup_sent and self._bridge is not None and bridge_listens:
            self._send_setup()
        self.missing_now = self.missing()
        now = self.now()
        if self.missing_now or now is None or not self._setup_sent:
            self._ready_since, self.ready = None, False
        else:
            self._ready_since = now if self._ready_since is None else self._ready_since
            self.ready = now - self._ready_since >= self.cfg.settle_s
        if self.cfg.autostart:
            if self.ready:
                self.begin()
            elif time.monotonic() - self._created > self.cfg.ready_timeout_s:
                self.fail(f"the graph was not ready after {self.cfg.ready_timeout_s:g} s: "
                          + "; ".join(self.missing_now or ["it did not settle"]))

    def _send_setup(self) -> None:
        self._setup_sent = True
        for event in setup_events(self.scenario):
            if self.hardware:
                self.get_logger().warning(f"OPERATOR, before the start: {describe_event(event)}")
            self._events.publish(String(data=json.dumps(event.to_json())))
            self.setup_published += 1

    # --------------------------------------------------------------- run
    def begin(self) -> None:
        """Start the scenario at the next tick of the trial clock (its time 0)."""
        self._start_requested = True

    def fail(self, reason: str) -> None:
        """Stop for good, with the reason (nothing more is sent)."""
        if self.state in ("waiting", "running"):
            self.state, self.failure = "failed", reason
            self.get_logger().error(reason)

    def _tick(self, now: float) -> None:
        if self.state == "waiting" and self._start_requested:
            self.state, self.t0 = "running", now
            self.get_logger().info(f"scenario '{self.scenario.name}' started")
        if self.state != "running":
            return
        t = now - self.t0
        self.scenario_t = t
        step = self.player.step(t)
        for event in step.events:
            self._send_event(event, t, now)
        # On hardware this runs on a timer at rate_hz; the simulator's clock ticks every control period.
        if self.hardware or step.done or t >= self._next_cmd_t - 1e-6:
            twist = Twist()
            twist.linear.x, twist.linear.y, twist.angular.z = (float(v) for v in step.command)
            self._cmd_vel.publish(twist)
            self.published["cmd_vel"] += 1
            self._next_cmd_t = max(self._next_cmd_t + 1.0 / self.cfg.rate_hz, t)
        if step.done:
            self.state, self.t_end = "done", now
            self.get_logger().info(f"scenario '{self.scenario.name}' done after {t:.2f} s: "
                                   f"{self.published['cmd_vel']} cmd_vel, {self.published['sim/events']} events")

    def _send_event(self, event: Event, t: float, now: float) -> None:
        data = json.dumps(event.to_json())
        if self.hardware:
            self.get_logger().warning(f"OPERATOR, now (t = {event.t:g} s): {describe_event(event)}")
        else:
            self.get_logger().info(f"event at {t:.3f} s (due {event.t:g} s): {data}")
        self._events.publish(String(data=data))
        self.published["sim/events"] += 1
        self.event_log.append({"t": event.t, "sent_at_s": t, "clock_s": now, "event": data})

    def subscribers(self) -> dict[str, int]:
        """Subscriptions matched to the trial's publishers, per topic."""
        return {"cmd_vel": self._cmd_vel.get_subscription_count(), "sim/events": self._events.get_subscription_count()}

    def summary(self) -> dict[str, Any]:
        """The run so far: state, clock readings, counts and the events as sent."""
        return {"scenario": self.scenario.name, "state": self.state, "failure": self.failure,
                "clock": "wall" if self.hardware else "sim", "t0": self.t0, "t_end": self.t_end,
                "published": dict(self.published), "setup_published": self.setup_published,
                "events": list(self.event_log)}


def main(args: list[str] | None = None) -> int:
    """Entry point of the `trial_runner` console script: play the scenario, exit when it is done."""
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    from metaloco.ros_pkgs.ros_env import ensure_localhost_discovery

    ensure_localhost_discovery()
    with rclpy.init(args=args):
        try:
            node = TrialRunner()
        except Exception as err:  # bad parameters, a scenario that does not load
            print(f"trial_runner: error: {err}", file=sys.stderr)
            return 2
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        try:
            while node.state in ("waiting", "running"):
                executor.spin_once(timeout_sec=0.1)
        except (KeyboardInterrupt, ExternalShutdownException):
            node.fail("interrupted")
        finally:
            print(json.dumps(node.summary()), flush=True)
            node.destroy_node()
    return 0 if node.state == "done" else 1


if __name__ == "__main__":
    raise SystemExit(main())
