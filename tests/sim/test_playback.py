"""Playing a scenario against an outside clock: commands in force, each event once at its time, a clean end."""

from __future__ import annotations

import numpy as np

from metaloco.sim.playback import ScenarioPlayer, describe_event, setup_events
from metaloco.sim.scenario import load_scenario


def write(tmp_path, text: str):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return load_scenario(path)


def test_events_fire_once_at_their_time_and_the_end_is_reported(tmp_path):
    scenario = write(tmp_path, "name: s\nduration_s: 2.0\ncommand: [{t: 0, vx: 0.2}, {t: 1.0, vx: 0.6}]\n"
                               "events:\n  - {t: 0.5, fault: {joint: FR_lower_joint, mode: locked}}\n"
                               "  - {t: 0.5, push: {force_n: [0, 50, 0]}}\n  - {t: 1.5, clear_faults: true}\n")
    player = ScenarioPlayer(scenario)
    fired = []
    for k in range(0, 101):  # a 50 Hz clock
        step = player.step(k * 0.02)
        fired += [(round(k * 0.02, 2), e.kind) for e in step.events]
        if k * 0.02 < 1.0 - 1e-9:
            np.testing.assert_allclose(step.command, [0.2, 0.0, 0.0])
        else:
            np.testing.assert_allclose(step.command, [0.6, 0.0, 0.0])
        assert step.done == (k == 100)
    assert fired == [(0.5, "fault"), (0.5, "push"), (1.5, "clear_faults")]
    assert not player.remaining


def test_a_coarse_clock_sends_late_events_at_once_and_in_order(tmp_path):
    scenario = write(tmp_path, "name: s\nduration_s: 3.0\nevents:\n  - {t: 1.0, terrain: {friction: 0.3}}\n"
                               "  - {t: 1.1, dynamics: {payload_kg: 2.0}}\n")
    player = ScenarioPlayer(scenario)
    assert player.step(0.9).events == []
    assert [e.kind for e in player.step(1.7).events] == ["terrain", "dynamics"]
    assert player.step(3.4).done


def test_setup_events_bring_a_nominal_simulator_to_the_starting_task(tmp_path):
    assert setup_events(load_scenario("fr_knee_locked")) == []  # flat ground, friction 0.8: nominal
    rough = setup_events(load_scenario("rough"))
    assert [e.kind for e in rough] == ["terrain"] and rough[0].terrain.roughness_m == 0.03
    loaded = write(tmp_path, "name: s\ndynamics: {payload_kg: 2.0}\nterrain: {type: flat, friction: 0.5}\n")
    assert [e.kind for e in setup_events(loaded)] == ["terrain", "dynamics"]


def test_an_operator_reads_what_to_do(tmp_path):
    scenario = write(tmp_path, "name: s\nevents:\n  - {t: 1.0, fault: {joint: RL_upper_joint, mode: weak, "
                               "strength: 0.4}}\n  - {t: 2.0, push: {force_n: [0, 60, 0], duration_s: 0.2}}\n")
    texts = [describe_event(e) for e in scenario.events]
    assert texts[0] == "fault on RL_upper_joint: weak at 40% strength"
    assert "push" in texts[1] and "60" in texts[1]
