"""The XML launch reader behind `metaloco up`: the shipped files, the supported subset, clear failures."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from metaloco.paths import share_dir
from metaloco.ros_pkgs.launch_xml import LaunchError, LaunchFile, param_yaml, run_launch
from metaloco.ros_pkgs.params import AdaptationNodeConfig, BridgeConfig, PolicyNodeConfig, config_fields
from metaloco.schema import from_dict

ROOT = Path(__file__).resolve().parents[2]
SIM = ROOT / "launch" / "sim.launch.xml"
ROBOT = ROOT / "launch" / "robot.launch.xml"


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "test.launch.xml"
    path.write_text(textwrap.dedent(body).lstrip())
    return path


def params_of(node) -> dict[str, str]:
    return {k: v for k, v in node.params if k != "from"}


def test_sim_launch_starts_bridge_policy_and_adaptation_with_the_model_of_the_robot():
    nodes = LaunchFile(SIM).nodes([])
    assert [n.name for n in nodes] == ["robot_bridge", "policy_node", "adaptation_node"]
    bridge, policy, adaptation = nodes
    assert params_of(bridge)["driver"] == "sim" and params_of(bridge)["auto_activate"] == "true"
    assert params_of(policy)["model_dir"] == str(share_dir() / "models" / "a1")
    assert params_of(adaptation)["model_dir"] == params_of(policy)["model_dir"]
    for node in nodes:  # every node reads config/nodes.yaml first, then the launch file's own values
        assert node.params[0] == ("from", str(share_dir() / "config" / "nodes.yaml"))
        args = node.ros_args()
        assert args[:3] == ["--ros-args", "-r", f"__node:={node.name}"]
        assert args.index("--params-file") < args.index("-p")


def test_launch_arguments_change_what_starts():
    nodes = LaunchFile(SIM).nodes(["use_adaptation:=false", "model_dir:=/somewhere/else", "lockstep:=true"])
    assert [n.name for n in nodes] == ["robot_bridge", "policy_node"]
    assert params_of(nodes[1])["model_dir"] == "/somewhere/else"
    assert params_of(nodes[0])["lockstep"] == "true"
    robot = LaunchFile(ROBOT).nodes(["driver:=serial_bridge", "port:=/dev/ttyACM3"])
    assert params_of(robot[0]) == {"robot": "a1", "driver": "serial_bridge", "port": "/dev/ttyACM3",
                                       "auto_activate": "false"}


@pytest.mark.parametrize("args, message", [
    (["robto:=a1"], "unknown launch argument(s) ['robto']"),
    (["driver:=can_bus"], "argument 'driver' is 'can_bus'; allowed values are ['dynamixel', 'serial_bridge']"),
    (["use_adaptation"], "launch arguments are name:=value"),
])
def test_bad_launch_arguments_are_refused(args, message):
    with pytest.raises(LaunchError) as err:
        LaunchFile(ROBOT).nodes(args)
    assert message in str(err.value)


def test_unknown_tag_fails_naming_the_tag_and_its_line(tmp_path, capsys):
    path = write(tmp_path, """
        <launch>
          <arg name="robot" default="a1"/>
          <include file="other.launch.xml"/>
        </launch>
    """)
    with pytest.raises(LaunchError) as err:
        LaunchFile(path)
    assert f"{path}:3: unsupported launch tag <include>" in str(err.value)
    assert run_launch(str(path), []) == 2
    assert "unsupported launch tag <include>" in capsys.readouterr().err


@pytest.mark.parametrize("body, message", [
    ('<node pkg="metaloco" exec="policy_node" respawn="true"/>', ":2: unsupported attribute 'respawn' of <node>"),
    ('<node pkg="metaloco" exec="policy_node"><param name="x"/></node>', ":2: <param> takes name and value"),
    ('<node pkg="metaloco" exec="teleop"/>', "<node exec='teleop'>: metaloco has no such node"),
    ('<node pkg="turtlesim" exec="turtlesim_node"/>', "metaloco up starts package metaloco's nodes only"),
    ('<node pkg="metaloco" exec="$(var nope)"/>', "$(var nope) is not a declared argument"),
    ('<node pkg="metaloco" exec="policy_node" if="maybe"/>', "condition must be true, false, 1 or 0"),
    ('<node pkg="metaloco" exec="policy_node"><param name="x" value="$(command ls)"/></node>',
     "unsupported substitution $(command ls)"),
    ('<arg name="model_dir"/>', "launch argument 'model_dir' is required"),
    ('<node pkg="metaloco" exec="robot_bridge"><param name="port" value=""/></node>',
     ":2: <param name='port'>: value '' reads as NoneType, which ros2 launch refuses"),
    ('<node pkg="metaloco" exec="policy_node"', "not well-formed XML"),
])
def test_unsupported_launch_content_is_an_error_not_skipped(tmp_path, body, message):
    path = write(tmp_path, f"<launch>\n  {body}\n</launch>\n")
    with pytest.raises(LaunchError) as err:
        LaunchFile(path).nodes([])
    assert message in str(err.value)


def test_a_missing_model_path_fails_clearly(capsys):
    code = run_launch(str(SIM), ["model_dir:=/nonexistent/metaloco-model", "use_adaptation:=false"])
    err = capsys.readouterr().err
    assert code == 2
    assert "node 'policy_node' (metaloco/policy_node) failed to start" in err
    assert "/nonexistent/metaloco-model" in err and "model folder not found" in err


def test_param_values_are_typed_as_ros2_launch_types_them():
    assert [param_yaml(v) for v in ("true", "3", "3.0", "a1", "''", "'3'", "[1, 2]", "/dev/tty USB")] == \
        ["true", "3", "3.0", "a1", "''", "'3'", "[1, 2]", "/dev/tty USB"]
    for refused in ("", "a: b", "[]", "[1, a]"):
        with pytest.raises(ValueError):
            param_yaml(refused)


def test_nodes_yaml_sets_only_declared_parameters_with_valid_values():
    data = yaml.safe_load((ROOT / "config" / "nodes.yaml").read_text())
    configs = {"robot_bridge": BridgeConfig, "policy_node": PolicyNodeConfig, "adaptation_node": AdaptationNodeConfig}
    assert set(data) == set(configs)
    for node, cls in configs.items():
        values = data[node]["ros__parameters"]
        assert set(values) <= set(config_fields(cls)), f"{node}: undeclared {set(values) - set(config_fields(cls))}"
        from_dict(cls, values, f"config/nodes.yaml {node}")


def test_every_node_executable_of_the_package_can_be_launched_in_process():
    import importlib
    import re

    from metaloco.ros_pkgs.launch_xml import EXECUTABLES

    scripts = dict(re.findall(r'"(\w+) = (metaloco\.[\w.]+):main"', (ROOT / "setup.py").read_text()))
    nodes = {name for name in scripts if name != "metaloco"}
    assert nodes == set(EXECUTABLES), (nodes, set(EXECUTABLES))
    for name, target in EXECUTABLES.items():
        module, _, cls = target.partition(":")
        assert module == scripts[name] and isinstance(getattr(importlib.import_module(module), cls), type), name
