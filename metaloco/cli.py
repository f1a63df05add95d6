"""The `metaloco` command line: one entry point, one subcommand per task.

Every `--json` prints one JSON object as its last line. Subcommands import their
layer lazily, so `metaloco --help` is fast and a missing optional part names itself.
"""

from __future__ import annotations

import argparse
import json
import sys

from metaloco.schema import ConfigError


def _print_json(result: dict) -> None:
    print(json.dumps(result))


def cmd_bench(args: argparse.Namespace) -> int:
    if args.what == "sim":
        from metaloco.sim.bench import bench_sim

        print(f"bench sim: {args.seconds:.0f} s per configuration, {args.envs} envs, 1 and {args.workers} workers ...",
              file=sys.stderr)
        result = bench_sim(seconds=args.seconds, num_envs=args.envs, workers=args.workers, robot=args.robot)
    elif args.what == "serial":
        from metaloco.hardware.bench import run_serial_bench

        result = run_serial_bench(args.protocol, args.seconds)
    elif args.what == "control":
        from metaloco.ros_pkgs.bench_control import bench_control

        result = bench_control(rate_hz=args.rate, seconds=args.seconds, model_dir=args.model_dir)
    elif args.what == "recorder":
        from metaloco.ros_pkgs.recorder import bench_recorder

        result = bench_recorder(rate_hz=args.rate, seconds=args.seconds)
    else:
        raise ValueError(args.what)
    if args.json:
        _print_json(result)
    else:
        for key, value in result.items():
            print(f"{key:>28}: {value}")
    return 0


def cmd_scenario(args: argparse.Namespace) -> int:
    """`metaloco scenario FILE`: validate a scenario and run it with the bare gait generator (no policy)."""
    import numpy as np

    from metaloco.sim.gait import GAIT_OUTPUTS
    from metaloco.sim.scenario import load_scenario, run_scenario

    scenario = load_scenario(args.scenario)
    print(f"{scenario.name}: robot {scenario.robot.name}, {scenario.duration_s} s, {len(scenario.events)} events",
          file=sys.stderr)
    trace = run_scenario(scenario, lambda obs, info: np.zeros(scenario.robot.n_joints + GAIT_OUTPUTS))
    result = {"scenario": scenario.name, "steps": len(trace.t), "fell": trace.fell,
              "distance_m": round(float(trace.base_pos[-1][0] - trace.base_pos[0][0]), 3)}
    _print_json(result) if args.json else print(result)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from metaloco.adaptation.train import train

    out = args.out or f"runs/{args.preset}"
    print(f"metaloco train: preset {args.preset}, run folder {out} (resumes from its checkpoints)", file=sys.stderr)
    train(args.preset, out, export=not args.no_export)
    if args.ship:
        from metaloco.adaptation.export import ship

        ship(out, args.ship, command=" ".join(["metaloco"] + sys.argv[1:]))
        print(f"metaloco train: shipped to {args.ship}", file=sys.stderr)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from metaloco.adaptation.evaluate import default_progress, evaluate

    result = evaluate(args.scenario, args.method, args.episodes, args.model_dir, progress=default_progress)
    if args.json:
        _print_json(result)
    else:
        for key, value in result.items():
            print(f"{key:>20}: {value}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from metaloco.adaptation.export import export_run, ship

    out = export_run(args.run, args.out or f"{args.run}/export")
    print(f"metaloco export: wrote {out}", file=sys.stderr)
    if args.ship:
        ship(args.run, args.ship, command=" ".join(["metaloco"] + sys.argv[1:]))
        print(f"metaloco export: shipped to {args.ship}", file=sys.stderr)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Until the trial demo lands (issue 6): run the locked-knee scenario with the bare gait generator."""
    print("metaloco demo: the full demo (a ROS 2 trial with the shipped models, adaptation on vs off) is not "
          "implemented yet (issue 6).\nRunning instead: the 'fr_knee_locked' scenario in pybullet with the bare "
          "trotting generator and no policy, to show the simulator and the task family.", file=sys.stderr)
    return cmd_scenario(argparse.Namespace(scenario="fr_knee_locked", json=False))


def cmd_report(args: argparse.Namespace) -> int:
    from metaloco.adaptation.report import regenerate_report

    path = regenerate_report(args.dir, compare=args.compare, title=args.title)
    print(f"metaloco report: wrote {path}", file=sys.stderr)
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from pathlib import Path

    from metaloco.paths import launch_dir
    from metaloco.ros_pkgs.launch_xml import run_launch

    path = Path(args.file)
    if not path.is_file() and (launch_dir() / args.file).is_file():
        path = launch_dir() / args.file
    return run_launch(str(path), args.rest)


def _not_yet(issue: int, what: str):
    def run(args: argparse.Namespace) -> int:
        print(f"metaloco {what}: not implemented yet (tracked in issue {issue}).", file=sys.stderr)
        return 2

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metaloco", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    bench = sub.add_parser("bench", help="measure performance: sim, control, serial, recorder")
    bench.add_argument("what", choices=["sim", "control", "serial", "recorder"])
    bench.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    bench.add_argument("--seconds", type=float, default=None, help="measuring time")
    bench.add_argument("--workers", type=int, default=2, help="(sim) worker processes")
    bench.add_argument("--envs", type=int, default=16, help="(sim) envs per configuration")
    bench.add_argument("--robot", default="a1", help="(sim) robot name")
    bench.add_argument("--rate", type=float, default=200.0, help="(control, recorder) loop rate in Hz")
    bench.add_argument("--protocol", default="dynamixel", choices=["dynamixel", "serial_bridge"], help="(serial)")
    bench.add_argument("--model-dir", default=None, help="(control) model folder (default: models/a1)")
    bench.set_defaults(func=cmd_bench)

    scen = sub.add_parser("scenario", help="validate a scenario file and run it with the bare gait generator")
    scen.add_argument("scenario")
    scen.add_argument("--json", action="store_true")
    scen.set_defaults(func=cmd_scenario)

    train = sub.add_parser("train", help="meta-train: RMA phases 1 and 2, the robust baseline, the prior, export")
    train.add_argument("--preset", default="smoke", help="config/train/<preset>.yaml: smoke (seconds) or full")
    train.add_argument("--out", default=None, help="run folder (default runs/<preset>); an existing one is resumed")
    train.add_argument("--no-export", action="store_true", help="skip the ONNX export")
    train.add_argument("--ship", default=None, metavar="DIR", help="also copy the artifacts into DIR (e.g. models/a1)")
    train.set_defaults(func=cmd_train)

    export = sub.add_parser("export", help="export a training run to ONNX (+ prior, manifest)")
    export.add_argument("run", help="run folder written by metaloco train")
    export.add_argument("--out", default=None, help="artifact folder (default RUN/export)")
    export.add_argument("--ship", default=None, metavar="DIR", help="also copy the artifacts into DIR")
    export.set_defaults(func=cmd_export)

    ev = sub.add_parser("eval", help="evaluate a method on a scenario in pybullet with the exported models")
    ev.add_argument("--scenario", required=True, help="scenario file or name under config/scenarios/")
    ev.add_argument("--method", required=True, choices=["adaptive", "nominal", "robust", "oracle"])
    ev.add_argument("--episodes", type=int, default=1)
    ev.add_argument("--model-dir", default=None, help="exported models (default models/<robot>)")
    ev.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    ev.set_defaults(func=cmd_eval)

    demo = sub.add_parser("demo", help="the README demo")
    demo.set_defaults(func=cmd_demo)

    report = sub.add_parser("report", help="regenerate a trial's report from its bag")
    report.add_argument("dir", help="trial folder (DIR/bag) or a bag folder")
    report.add_argument("--compare", default=None, help="a second trial shown side by side")
    report.add_argument("--title", default=None)
    report.set_defaults(func=cmd_report)

    up = sub.add_parser("up", help="run a ROS 2 XML launch file in this process (the nodes ros2 launch would start)")
    up.add_argument("file", help="launch/FILE.launch.xml, or a file name under the installed launch/ folder")
    up.add_argument("rest", nargs="*", metavar="name:=value", help="launch arguments")
    up.set_defaults(func=cmd_up)

    for name, issue, text in (("trial", 6, "run a field trial"),):
        p = sub.add_parser(name, help=f"{text} (not implemented yet: issue {issue})")
        p.add_argument("rest", nargs=argparse.REMAINDER)
        p.set_defaults(func=_not_yet(issue, name))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "seconds", "unset") is None:
        args.seconds = {"sim": 10.0, "control": 30.0, "serial": 10.0, "recorder": 60.0}.get(getattr(args, "what", ""), 10.0)
    try:
        return int(args.func(args) or 0)
    except ConfigError as err:
        print(f"metaloco: error: {err}", file=sys.stderr)
        return 2
    except Exception as err:
        # Errors the layers raise for bad input (bags, drivers, launch files) carry a message meant for the user.
        if type(err).__name__ in ("BagError", "DriverError", "LaunchError", "MessageError", "SafetyError"):
            print(f"metaloco: error: {err}", file=sys.stderr)
            return 2
        raise
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
