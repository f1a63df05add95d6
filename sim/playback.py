"""Playing a scenario against an outside clock: the command in force and each event once, at its time.

`run_scenario` (sim/scenario.py) owns its simulator and steps it; a field trial does not: the robot,
or the simulator behind the ROS 2 graph, runs on its own, and the trial runner only reads a clock
(the simulator's `/clock`, or the wall clock on hardware). `ScenarioPlayer` is that part without ROS:
given the scenario time it says which command to send and which events are now due.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from metaloco.sim.scenario import Event, Scenario
from metaloco.sim.tasks import DynamicsSpec, TerrainSpec


@dataclass
class PlayerStep:
    """What to do at one instant of a scenario."""

    command: np.ndarray
    """(vx, vy, yaw_rate) in force."""
    events: list[Event]
    """Events that became due since the last step, in order (each is returned once)."""
    done: bool
    """The scenario's duration has elapsed: this is the last step."""


class ScenarioPlayer:
    """The command profile and event timeline of a scenario, read at increasing times.

    Args:
        scenario: A loaded scenario.
    """

    def __init__(self, scenario: Scenario):
        self.scenario = scenario
        self._pending = list(scenario.events)
        self.done = False

    def step(self, t: float) -> PlayerStep:
        """Advance to scenario time `t` (s since the trial started; never decreasing).

        Returns:
            The command at `t`, the events due by `t` not returned before, and whether the scenario ended.
        """
        due = []
        while self._pending and self._pending[0].t <= t + 1e-9:
            due.append(self._pending.pop(0))
        self.done = self.done or t >= self.scenario.duration_s - 1e-9
        return PlayerStep(self.scenario.command_at(min(t, self.scenario.duration_s)), due, self.done)

    @property
    def remaining(self) -> list[Event]:
        """Events not yet due."""
        return list(self._pending)


def setup_events(scenario: Scenario) -> list[Event]:
    """Events that turn the simulator's nominal task into the scenario's starting task.

    A sim bridge starts on flat ground with nominal dynamics; a scenario may start elsewhere (rough
    ground, a payload). These events, sent before the trial's time 0, set that up.

    Returns:
        A terrain and/or a dynamics event at t = 0, for what differs from nominal; none for a nominal start.
    """
    out = []
    if scenario.task.terrain != TerrainSpec():
        out.append(Event(0.0, "terrain", terrain=scenario.task.terrain))
    if scenario.task.dynamics != DynamicsSpec():
        out.append(Event(0.0, "dynamics", dynamics=scenario.task.dynamics))
    return out


def describe_event(event: Event) -> str:
    """A sentence for an operator: what to do to the robot at this event."""
    if event.kind == "fault":
        fault = event.fault
        detail = {"weak": f" at {fault.strength:.0%} strength", "bias": f" by {fault.offset_rad:+.3f} rad"}
        return f"fault on {event.joint}: {fault.mode}{detail.get(fault.mode, '')}"
    if event.kind == "terrain":
        return f"terrain now {event.terrain}"
    if event.kind == "dynamics":
        return f"dynamics now {event.dynamics}"
    if event.kind == "push":
        return f"push the base with {event.force_n} N for {event.duration_s} s"
    return "clear every fault"
