"""Field trials: one scenario through the full ROS 2 graph, recorded to rosbag2, measured and reported.

`metaloco trial --scenario FILE --out DIR` is `plan_trial` then `run_trial`:

1. Check everything before anything starts (`plan_trial`): the scenario (joint names against the
   robot), the output directory (must not exist), the launch file and its arguments, the model files.
2. Bring up the launch file's graph in this process (`launch/sim.launch.xml` by default, the
   simulator in lock-step) and a `trial_runner` node, and wait until the graph is ready: the bridge
   active, policy commands reaching it, the adaptation latent flowing (when on). A graph that is not
   ready in time is an error naming what is missing, and nothing has been written.
3. Start the recorder (DIR/bag, rosbag2 + MCAP), wait until it hears the graph, and play the
   scenario. In sim the scenario runs on the simulator's `/clock` and the bag is stamped with it, so a
   lock-step simulator slowed down by this machine is measured in simulated seconds.
4. At the scenario's end stop the simulator, let the recorder take the last messages, close the bag,
   and write DIR/trial.json (what was published and recorded, wall and simulated time), then
   DIR/metrics.json, DIR/report.md and the plots from the bag alone (`adaptation/report.py`).

A trial that fails after the bag was opened leaves the bag (readable, for a post-mortem) and
DIR/TRIAL_FAILED.txt saying why, and neither metrics.json nor report.md.

`run_compare` runs the scenario with adaptation on and off into DIR/adaptive and DIR/no_adaptation
and writes one side-by-side report in DIR. Adaptation off is the DESIGN.md `nominal` method: the
same policy with the nominal task's latent, no adaptation node. For a policy fine-tuned on the
adapter's estimate (phase 3, `latent_input: adapter`), which was never trained on a fixed latent and
which the policy node will not run without adaptation, adaptation off runs the policy it was
fine-tuned from (the model folder's `before_phase3/`), as the model card's "without adaptation" does.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from metaloco.adaptation.runtime import BEFORE_PHASE3, latent_input, metadata, session
from metaloco.paths import launch_dir, models_dir
from metaloco.ros_pkgs.launch_xml import LaunchError, LaunchFile, NodeLaunch
from metaloco.sim.scenario import Scenario, load_scenario

#: Files a model folder needs, by the node that loads them.
MODEL_FILES = {"policy_node": ("policy.onnx", "prior.json"), "adaptation_node": ("policy.onnx", "adapter.onnx",
                                                                                 "prior.json")}
#: Sub-folders and labels of a `--compare` trial.
COMPARE_RUNS = (("adaptive", "adaptation on"), ("no_adaptation", "adaptation off"))
#: Wall seconds to wait for the recorder to hear the graph, and for the last messages to reach it.
RECORDER_MATCH_S, DRAIN_S = 15.0, 3.0
#: Wall seconds between progress lines while a scenario runs.
PROGRESS_PERIOD_S = 2.0
#: lock-step: how long the simulator waits for a policy answer before stepping anyway (wall s). The launch
#: files' 0.5 s lets a stall of this busy machine age the commands in sim time and damp the robot; a trial
#: measures the policy, not the machine, so it waits longer.
TRIAL_LOCKSTEP_TIMEOUT_S = 5.0


class TrialError(RuntimeError):
    """A trial that cannot start or did not finish; the message says why and what was left on disk."""


@dataclass
class TrialPlan:
    """A checked trial, ready to run."""

    scenario: Scenario
    out: Path
    launch: Path
    launch_args: list[str]
    nodes: list[NodeLaunch]
    method: str
    """adaptive (adaptation node running) or nominal (the nominal task's latent, no adaptation)."""
    sim: bool
    """The launch runs the sim bridge (else a hardware driver, or a bridge outside this launch)."""
    lockstep: bool
    model_dir: Path
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Node parameters the trial sets on top of the launch's parameter file (written to a temporary copy)."""
    _tmp: list[Any] = field(default_factory=list, repr=False)

    @property
    def timing(self) -> str:
        """How the trial's clock ran, as recorded in the bag."""
        if not self.sim:
            return "hardware, wall clock"
        return "sim, lock-step" if self.lockstep else "sim, real time"


def _param(node: NodeLaunch, name: str) -> str | None:
    values = [v for k, v in node.params if k == name]
    return values[-1] if values else None


def plan_trial(scenario: str | Path, out: str | Path, *, adaptation: bool = True, launch: str | Path | None = None,
               model_dir: str | Path | None = None) -> TrialPlan:
    """Check a trial's inputs without starting anything.

    Args:
        scenario: Scenario file, or a name under config/scenarios/.
        out: Trial directory to create; it must not exist.
        adaptation: Run the adaptation node (False: the `nominal` method).
        launch: Launch file (default launch/sim.launch.xml), or a file name under the installed launch/.
        model_dir: Model folder passed to the launch file (default: the launch file's, models/<robot>).

    Returns:
        The plan.

    Raises:
        ConfigError: The scenario is invalid (e.g. names a joint the robot lacks).
        LaunchError: The launch file is missing or invalid, or lacks an argument the trial needs.
        TrialError: The output directory exists, or the model files are missing.
    """
    loaded = load_scenario(scenario)
    out = Path(out)
    if out.exists():
        raise TrialError(f"output directory {out} already exists: choose a new one (nothing was overwritten)")
    path = Path(launch) if launch else launch_dir() / "sim.launch.xml"
    if launch and not path.is_file() and (launch_dir() / str(launch)).is_file():
        path = launch_dir() / str(launch)
    launch_file = LaunchFile(path)
    declared = {e.attrib["name"] for e in launch_file.args}

    def need(arg: str, why: str) -> None:
        if arg not in declared:
            raise LaunchError(f"{path}: {why} needs the launch argument '{arg}', which this file does not declare "
                              f"(it declares {sorted(declared)})")

    args = {"robot": loaded.robot.name} if "robot" in declared else {}
    if "lockstep" in declared:
        args["lockstep"] = "true"
    if model_dir is not None:
        need("model_dir", "--model-dir")
        args["model_dir"] = str(Path(model_dir).resolve())
    if not adaptation:
        need("use_adaptation", "--no-adaptation")
        args["use_adaptation"] = "false"
    nodes = launch_file.nodes(args)
    by_exec = {n.executable: n for n in nodes}
    overrides: dict[str, dict[str, Any]] = {}
    if not adaptation:
        overrides["policy_node"] = {"initial_latent": "nominal"}
    if args.get("lockstep") == "true":
        # the sim bridge draws its terrain noise from the scenario's seed, as `metaloco eval` does
        overrides["robot_bridge"] = {"lockstep_timeout_s": TRIAL_LOCKSTEP_TIMEOUT_S, "sim_seed": loaded.seed}
    tmp: list[Any] = []
    if overrides:
        param_files = {v for n in nodes for k, v in n.params if k == "from"}
        if "params_file" not in declared or len(param_files) != 1:
            if not adaptation:
                raise LaunchError(f"{path}: --no-adaptation sets policy_node's initial_latent to 'nominal' through "
                                  "the launch argument 'params_file' (one parameter file for all nodes), which this "
                                  "file does not have")
        else:
            params = yaml.safe_load(Path(param_files.pop()).read_text()) or {}
            for node, values in overrides.items():
                params.setdefault(node, {}).setdefault("ros__parameters", {}).update(values)
            handle = tempfile.NamedTemporaryFile("w", prefix="metaloco-trial-", suffix=".yaml", delete=True)
            yaml.safe_dump(params, handle)
            handle.flush()
            tmp.append(handle)
            args["params_file"] = handle.name
            nodes = launch_file.nodes(args)
            by_exec = {n.executable: n for n in nodes}
    if "policy_node" not in by_exec:
        raise LaunchError(f"{path}: launches no policy_node; a trial needs the policy")
    policy = by_exec["policy_node"]
    folder = Path(_param(policy, "model_dir") or models_dir() / loaded.robot.name)
    if not adaptation and _latent_input(folder / "policy.onnx") == "adapter":
        before = folder / BEFORE_PHASE3
        if not (before / "policy.onnx").is_file():
            raise TrialError(f"{folder / 'policy.onnx'} was fine-tuned on the adapter's estimate (latent_input: "
                             f"adapter) and does not run without adaptation; --no-adaptation needs the policy it was "
                             f"fine-tuned from in {before}, which is missing")
        need("model_dir", "--no-adaptation with a phase-3 model (it runs before_phase3/)")
        args["model_dir"] = str(before.resolve())
        nodes = launch_file.nodes(args)
        by_exec = {n.executable: n for n in nodes}
        folder = before.resolve()
    for executable, files in MODEL_FILES.items():
        if executable in by_exec:
            missing = [f for f in files if not (folder / f).is_file()]
            if missing:
                raise TrialError(f"model missing: {', '.join(str(folder / f) for f in missing)} not found. Train and "
                                 f"ship one (`metaloco train --preset full --ship models/{loaded.robot.name}`) or "
                                 "pass --model-dir <folder with policy.onnx, adapter.onnx, prior.json>")
    bridge = by_exec.get("robot_bridge")
    sim = bridge is not None and (_param(bridge, "driver") or "sim") == "sim"
    lockstep = sim and str(_param(bridge, "lockstep")).lower() in ("true", "1")
    method = "adaptive" if "adaptation_node" in by_exec else "nominal"
    return TrialPlan(loaded, out, path, [f"{k}:={v}" for k, v in args.items()], nodes, method, sim, lockstep,
                     folder, overrides if tmp else {}, tmp)


def _latent_input(path: Path) -> str:
    """policy.onnx's `latent_input` ('any' when absent or when the file is missing: the model check says that)."""
    if not path.is_file():
        return "any"
    return latent_input(metadata(session(path), path, ()))


class _Spinner:
    """Nodes spun by their own executor threads (as `LaunchRunner` does), stopped in reverse order."""

    def __init__(self, context: Any):
        self.context = context
        self.items: list[tuple[Any, Any, threading.Thread]] = []

    def add(self, node: Any) -> Any:
        from rclpy.executors import SingleThreadedExecutor

        executor = SingleThreadedExecutor(context=self.context)
        executor.add_node(node)
        thread = threading.Thread(target=self._spin, args=(executor,), name=f"spin:{node.get_name()}", daemon=True)
        thread.start()
        self.items.append((node, executor, thread))
        return node

    @staticmethod
    def _spin(executor: Any) -> None:
        from rclpy.executors import ExternalShutdownException

        try:
            executor.spin()
        except ExternalShutdownException:
            pass

    def stop(self, node: Any) -> None:
        """Stop spinning one node (its callbacks no longer run); it is destroyed by `shutdown`."""
        for item, executor, thread in self.items:
            if item is node:
                executor.shutdown(timeout_sec=2.0)
                thread.join(timeout=2.0)

    def shutdown(self) -> None:
        for node, executor, thread in reversed(self.items):
            executor.shutdown(timeout_sec=2.0)
            thread.join(timeout=2.0)
            node.destroy_node()
        self.items.clear()


def _wait(condition: Callable[[], bool], timeout_s: float, problem: Callable[[], str],
          alive: Callable[[], str | None] = lambda: None, tick: Callable[[], None] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        dead = alive()
        if dead:
            raise TrialError(dead)
        if time.monotonic() > deadline:
            raise TrialError(problem())
        if tick is not None:
            tick()
        time.sleep(0.05)


def run_trial(plan: TrialPlan, *, ready_timeout_s: float = 120.0, run_timeout_s: float | None = None,
              progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run a planned trial and write its bag, trial.json, metrics.json, report.md and plots.

    Args:
        plan: From `plan_trial`.
        ready_timeout_s: Wall seconds for the graph to become ready.
        run_timeout_s: Wall seconds for the scenario once started (default: 30 x its duration + 60 s; a
            lock-step simulator on a busy machine runs slower than real time).
        progress: Called with one line of progress at a time.

    Returns:
        The contents of trial.json, with "metrics" (metrics.json) and "report" (the path of report.md).

    Raises:
        TrialError: The graph did not start or become ready (nothing written), or the trial failed
            (the bag and TRIAL_FAILED.txt are left in the trial directory).
    """
    import rclpy
    from rclpy.logging import LoggingSeverity
    from rclpy.parameter import Parameter

    from metaloco.adaptation.bag import MODEL_KEY, START_KEY
    from metaloco.ros_pkgs.launch_xml import LaunchRunner
    from metaloco.ros_pkgs.recorder import Recorder
    from metaloco.ros_pkgs.ros_env import ensure_localhost_discovery
    from metaloco.ros_pkgs.trial_runner import TrialRunner

    say = progress or (lambda _line: None)
    scenario, out = plan.scenario, plan.out
    if out.exists():
        raise TrialError(f"output directory {out} already exists: choose a new one (nothing was overwritten)")
    ensure_localhost_discovery()
    context = rclpy.Context()
    runner = LaunchRunner(plan.launch, plan.launch_args, context=context)
    rclpy.init(context=context)
    spinner = _Spinner(context)
    recorder: Any = None
    wall0 = time.monotonic()
    try:
        trial = spinner.add(TrialRunner(context=context, parameter_overrides=[
            Parameter("scenario", value=scenario.source), Parameter("hardware", value=not plan.sim),
            Parameter("autostart", value=False), Parameter("wait_for_latent", value=plan.method == "adaptive")]))
        say(f"starting {plan.launch.name} ({' '.join(plan.launch_args)}), {plan.timing}")
        try:
            runner.start()
        except LaunchError as err:
            raise TrialError(f"the graph did not start: {err}") from err
        for node in runner.nodes.values():  # their start-up lines are printed; from here on only trouble
            node.get_logger().set_level(LoggingSeverity.WARN)

        def died() -> str | None:
            if runner.died:
                name, err = next(iter(runner.died.items()))
                return f"node '{name}' died during the trial: {type(err).__name__}: {err}"
            return None

        say(f"waiting for the graph to be ready (up to {ready_timeout_s:g} s): {', '.join(runner.nodes)}")
        _wait(lambda: trial.ready, ready_timeout_s, lambda: f"the graph was not ready after {ready_timeout_s:g} s; "
              "missing: " + "; ".join(trial.missing_now or ["it did not stay ready for settle_s"])
              + ". Nothing was written.", died)
        say(f"graph ready after {time.monotonic() - wall0:.1f} s; recording to {out / 'bag'}")

        recorder = spinner.add(Recorder(context=context, parameter_overrides=[
            Parameter("output_dir", value=str(out / "bag")), Parameter("scenario", value=scenario.name),
            Parameter("method", value=plan.method), Parameter("use_sim_time", value=plan.sim)]))
        recorder.get_logger().set_level(LoggingSeverity.WARN)
        recorder.writer.custom["metaloco.timing"] = plan.timing
        recorder.writer.custom[MODEL_KEY] = str(plan.model_dir)  # adaptation off may run before_phase3/
        want = {"cmd_vel": 2, "sim/events": 2 if plan.sim else 1}  # the recorder, and the policy / the sim bridge
        _wait(lambda: all(n >= want[t] for t, n in trial.subscribers().items())
              and recorder.writer.counts.get("/joint_states", 0) > 0, RECORDER_MATCH_S,
              lambda: f"the recorder did not hear the graph within {RECORDER_MATCH_S:g} s "
                      f"(subscribers {trial.subscribers()}, recorded {recorder.writer.counts})", died)
        time.sleep(0.3)  # the recorder's side of discovery settles after the publishers' side
        # Still ready? Starting the recorder loads the machine; a starved node can cost the graph its readiness
        # (seen once: adaptation silent 1 s, the phase-3 policy stopped, the bridge damped), and a trial started
        # then would record a robot lying down.
        _wait(lambda: trial.ready, RECORDER_MATCH_S, lambda: "the graph stopped being ready while the recorder "
              "started: " + "; ".join(trial.missing_now or ["it did not stay ready for settle_s"]), died)

        trial.begin()
        say(f"scenario '{scenario.name}': {scenario.duration_s:g} s, {len(scenario.events)} event(s)")
        limit = run_timeout_s or 30.0 * scenario.duration_s + 60.0
        last = [time.monotonic()]

        def report_progress() -> None:
            if time.monotonic() - last[0] >= PROGRESS_PERIOD_S and trial.state == "running":
                last[0] = time.monotonic()
                say(f"  t = {trial.scenario_t:5.1f} / {scenario.duration_s:g} s, {len(trial.event_log)} event(s) "
                    f"sent, wall {time.monotonic() - wall0:.0f} s")

        _wait(lambda: trial.state in ("done", "failed"), limit,
              lambda: f"the scenario did not finish within {limit:g} s of wall time (at t = {trial.scenario_t:.1f} s)",
              died, report_progress)
        if trial.state == "failed":
            raise TrialError(trial.failure)
        for node in runner.nodes.values():
            node.get_logger().set_level(LoggingSeverity.ERROR)  # the graph winding down is no news
        bridge = next((n.name for n in plan.nodes if n.executable == "robot_bridge"), None)
        if plan.sim and bridge in runner.nodes:
            runner.stop_node(bridge)  # the simulated robot stops here; what it sent is still on its way
        published = {f"/{t}": n for t, n in trial.published.items()}
        recorder.writer.custom[START_KEY] = str(round(trial.t0 * 1e9))  # the report's time 0
        _drain(recorder, published)
        spinner.stop(recorder)  # no callback may write while the bag is closed
        summary = recorder.close()
        wall_s = time.monotonic() - wall0
    except BaseException as err:
        if recorder is not None:
            spinner.stop(recorder)
            recorder.close()
            reason = str(err) or type(err).__name__
            (out / "TRIAL_FAILED.txt").write_text(f"{reason}\nThe bag in bag/ holds what was recorded until then; "
                                                  "no metrics or report were written.\n", "utf8")
            if isinstance(err, TrialError):
                raise TrialError(f"{err} (the bag is kept in {out / 'bag'}; see {out / 'TRIAL_FAILED.txt'})") from err
        raise
    finally:
        for node in runner.nodes.values():
            node.get_logger().set_level(LoggingSeverity.ERROR)
        runner.shutdown()
        spinner.shutdown()
        rclpy.shutdown(context=context)

    recorded = summary["written"]
    result = {
        "scenario": scenario.name, "method": plan.method, "timing": plan.timing, "launch": str(plan.launch),
        "launch_args": plan.launch_args, "parameter_overrides": plan.overrides, "model_dir": str(plan.model_dir),
        "sim_s" if plan.sim else "trial_s": round(trial.t_end - trial.t0, 3),
        "wall_s": round(wall_s, 2), "published": published,
        "recorded": {t: recorded.get(t, 0) for t in published}, "recorded_all": recorded,
        "lost": {t: n - recorded.get(t, 0) for t, n in published.items()},
        "events": trial.event_log, "bag_bytes": summary["bytes"], "segments": summary["segments"],
    }
    (out / "trial.json").write_text(json.dumps(result, indent=2) + "\n", "utf8")
    from metaloco.adaptation.report import write_report

    result["report"] = str(write_report(out / "bag", out))
    result["metrics"] = json.loads((out / "metrics.json").read_text())
    say(f"done: {trial.t_end - trial.t0:.1f} s of scenario in {wall_s:.0f} s of wall time; report {result['report']}")
    return result


def _drain(recorder: Any, published: dict[str, int]) -> None:
    """Give the recorder up to DRAIN_S to receive what the trial runner published."""
    deadline = time.monotonic() + DRAIN_S
    while time.monotonic() < deadline and any(recorder.received.get(t, 0) < n for t, n in published.items()):
        time.sleep(0.05)
    time.sleep(0.2)  # and the graph's last messages


def run_compare(scenario: str | Path, out: str | Path, *, launch: str | Path | None = None,
                model_dir: str | Path | None = None, ready_timeout_s: float = 120.0,
                progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The scenario with adaptation on, then off, and one side-by-side report.

    Args:
        scenario: Scenario file or name.
        out: Directory to create: DIR/adaptive, DIR/no_adaptation (each a full trial) and DIR/report.md.
        launch: Launch file (default launch/sim.launch.xml).
        model_dir: Model folder (default: the launch file's).
        ready_timeout_s: Wall seconds for each graph to become ready.
        progress: Called with one line of progress at a time.

    Returns:
        {"report": path of DIR/report.md, "runs": {sub-folder: that trial's result}, "metrics": DIR/metrics.json}.

    Raises:
        TrialError, LaunchError, ConfigError: As `plan_trial` and `run_trial`; both plans are checked first.
    """
    from metaloco.adaptation.report import write_comparison

    out = Path(out)
    if out.exists():
        raise TrialError(f"output directory {out} already exists: choose a new one (nothing was overwritten)")
    plans = {sub: plan_trial(scenario, out / sub, adaptation=(sub == "adaptive"), launch=launch, model_dir=model_dir)
             for sub, _ in COMPARE_RUNS}
    say = progress or (lambda _line: None)
    runs = {}
    for (sub, label), plan in zip(COMPARE_RUNS, plans.values()):
        say(f"== {label}: {out / sub}")
        runs[sub] = run_trial(plan, ready_timeout_s=ready_timeout_s, progress=say)
    report = write_comparison(out)
    return {"report": str(report), "runs": runs, "metrics": json.loads((out / "metrics.json").read_text())}


def default_out(scenario: str | Path, root: str | Path = "runs/trials") -> Path:
    """A fresh trial directory: ROOT/<scenario name>-<date>-<time>[-k]."""
    name = Path(str(scenario)).stem
    base = Path(root) / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, k = base, 1
    while path.exists():
        path, k = Path(f"{base}-{k}"), k + 1
    return path
