"""ROS 2 XML launch files, run in one process: what `metaloco up launch/FILE.launch.xml` does.

The launch files under launch/ are plain ROS 2 XML launch files: `ros2 launch metaloco
sim.launch.xml` reads them on a robot. ROS 2's launch package is not on PyPI, so this module reads
the same files here and starts the same nodes with the same parameters in one process, each node
getting the command line `ros2 launch` would give its executable (`--ros-args -r __node:=...
--params-file ... -p name:=value -r from:=to`), each spun by its own executor thread.

The subset understood (everything else is an error naming the tag or attribute and its line):

    <launch>
      <arg name="..." default="..." description="..."> [<choice value="..."/> ...] </arg>
      <let name="..." value="..."/>
      <group if="..." unless="..."> ... </group>
      <node pkg="metaloco" exec="..." name="..." namespace="..." output="..." if="..." unless="...">
        <param name="..." value="..."/>  <param from="params.yaml"/>  <remap from="..." to="..."/>
      </node>
    </launch>

Substitutions: `$(var NAME)`, `$(find-pkg-share metaloco)`, `$(env NAME [DEFAULT])`, `$(dirname)`.
Conditions (`if`, `unless`) take true/false/1/0 after substitution.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
import threading
import time
import xml.parsers.expat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

#: Executables of package metaloco that the in-process runner can start: exec name -> "module:Class".
EXECUTABLES = {
    "policy_node": "metaloco.ros_pkgs.policy_node:PolicyNode",
    "adaptation_node": "metaloco.ros_pkgs.adaptation_node:AdaptationNode",
    "robot_bridge": "metaloco.ros_pkgs.robot_bridge:RobotBridge",
    "recorder": "metaloco.ros_pkgs.recorder:Recorder",
    "trial_runner": "metaloco.ros_pkgs.trial_runner:TrialRunner",
}

#: Allowed attributes (required ones first) and children of each tag.
_TAGS: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    # tag: (required attributes, optional attributes, allowed child tags)
    "launch": ((), ("version",), ("arg", "let", "group", "node")),
    "arg": (("name",), ("default", "description"), ("choice",)),
    "choice": (("value",), ("description",), ()),
    "let": (("name", "value"), (), ()),
    "group": ((), ("if", "unless"), ("let", "group", "node")),
    "node": (("pkg", "exec"), ("name", "namespace", "output", "if", "unless"), ("param", "remap")),
    "param": ((), ("name", "value", "from"), ()),
    "remap": (("from", "to"), (), ()),
}
_SUBSTITUTION = re.compile(r"\$\(([^()]*)\)")


class LaunchError(ValueError):
    """A launch file that cannot be run: the message names the file, the line and the problem."""


@dataclass
class Element:
    """An XML element with the line it starts on."""

    tag: str
    attrib: dict[str, str]
    line: int
    children: list[Element] = field(default_factory=list)


@dataclass
class NodeLaunch:
    """A node to start, with everything substituted."""

    package: str
    executable: str
    name: str
    namespace: str
    line: int
    params: list[tuple[str, str]] = field(default_factory=list)
    """In order: ("from", file) or (name, value); later entries override earlier ones, as in ROS 2."""
    remaps: list[tuple[str, str]] = field(default_factory=list)

    def ros_args(self) -> list[str]:
        """The node's command line, as `ros2 launch` builds it."""
        out = ["--ros-args", "-r", f"__node:={self.name}"]
        if self.namespace:
            out += ["-r", f"__ns:={self.namespace if self.namespace.startswith('/') else '/' + self.namespace}"]
        for key, value in self.params:
            out += ["--params-file", value] if key == "from" else ["-p", f"{key}:={param_yaml(value)}"]
        for src, dst in self.remaps:
            out += ["-r", f"{src}:={dst}"]
        return out


def parse_xml(path: Path) -> Element:
    """Read a launch file into `Element`s, keeping line numbers.

    Raises:
        LaunchError: The file is missing or not well-formed XML.
    """
    if not path.is_file():
        raise LaunchError(f"{path}: launch file not found")
    stack: list[Element] = []
    root: list[Element] = []
    parser = xml.parsers.expat.ParserCreate()

    def start(tag: str, attrib: dict[str, str]) -> None:
        element = Element(tag, dict(attrib), parser.CurrentLineNumber)
        (stack[-1].children if stack else root).append(element)
        stack.append(element)

    parser.StartElementHandler = start
    parser.EndElementHandler = lambda tag: stack.pop()
    try:
        parser.Parse(path.read_bytes(), True)
    except xml.parsers.expat.ExpatError as err:
        raise LaunchError(f"{path}:{err.lineno}: not well-formed XML: {xml.parsers.expat.errors.messages[err.code]}") \
            from None
    return root[0]


def check(element: Element, path: Path, parent: str | None = None) -> None:
    """Refuse any tag, attribute or nesting outside the supported subset."""
    where = f"{path}:{element.line}"
    if element.tag not in _TAGS:
        raise LaunchError(f"{where}: unsupported launch tag <{element.tag}>; metaloco up understands "
                          f"{sorted(_TAGS)} (run other launch files with ros2 launch)")
    if parent is None and element.tag != "launch":
        raise LaunchError(f"{where}: the root tag must be <launch>, not <{element.tag}>")
    if parent is not None and element.tag not in _TAGS[parent][2]:
        raise LaunchError(f"{where}: <{element.tag}> is not allowed inside <{parent}>; there: {list(_TAGS[parent][2])}")
    required, optional, _ = _TAGS[element.tag]
    for name in element.attrib:
        if name not in required + optional:
            raise LaunchError(f"{where}: unsupported attribute '{name}' of <{element.tag}>; "
                              f"supported: {list(required + optional)}")
    for name in required:
        if name not in element.attrib:
            raise LaunchError(f"{where}: <{element.tag}> needs the attribute '{name}'")
    if element.tag == "param":
        named = {"name", "value"} & set(element.attrib)
        if ("from" in element.attrib) == bool(named) or (named and len(named) < 2):
            raise LaunchError(f"{where}: <param> takes name and value, or from (a parameter file)")
    for child in element.children:
        check(child, path, element.tag)


class LaunchFile:
    """A checked launch file; `nodes(args)` evaluates it for some argument values.

    Args:
        path: The .launch.xml file.

    Raises:
        LaunchError: Missing file, bad XML, or a tag/attribute outside the supported subset.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.root = parse_xml(self.path)
        check(self.root, self.path)
        self.args = [e for e in self.root.children if e.tag == "arg"]

    def nodes(self, args: Sequence[str] | dict[str, str] = ()) -> list[NodeLaunch]:
        """The nodes to start, in file order, for the given `name:=value` arguments.

        Raises:
            LaunchError: An unknown or missing argument, a value outside an argument's choices, a bad
                substitution or condition, or a node this runner cannot start.
        """
        given = dict(args) if isinstance(args, dict) else parse_args(args, self.path)
        declared = {e.attrib["name"] for e in self.args}
        unknown = sorted(set(given) - declared)
        if unknown:
            raise LaunchError(f"{self.path}: unknown launch argument(s) {unknown}; "
                              f"this file declares {sorted(declared)}")
        variables: dict[str, str] = {}
        out: list[NodeLaunch] = []
        self._walk(self.root.children, variables, given, out)
        return out

    # ------------------------------------------------------------ private
    def _walk(self, elements: list[Element], variables: dict[str, str], given: dict[str, str],
              out: list[NodeLaunch]) -> None:
        for e in elements:
            if not self._enabled(e, variables):
                continue
            if e.tag == "arg":
                self._declare(e, variables, given)
            elif e.tag == "let":
                variables[e.attrib["name"]] = self._sub(e.attrib["value"], variables, e)
            elif e.tag == "group":
                self._walk(e.children, variables, given, out)
            elif e.tag == "node":
                out.append(self._node(e, variables))

    def _declare(self, e: Element, variables: dict[str, str], given: dict[str, str]) -> None:
        name = e.attrib["name"]
        if name in given:
            value = given[name]
        elif "default" in e.attrib:
            value = self._sub(e.attrib["default"], variables, e)
        else:
            description = e.attrib.get("description", "")
            raise LaunchError(f"{self.path}:{e.line}: launch argument '{name}' is required (no default): pass "
                              f"{name}:=<value>" + (f" ({description})" if description else ""))
        choices = [c.attrib["value"] for c in e.children]
        if choices and value not in choices:
            raise LaunchError(f"{self.path}:{e.line}: argument '{name}' is {value!r}; allowed values are {choices}")
        variables[name] = value

    def _node(self, e: Element, variables: dict[str, str]) -> NodeLaunch:
        sub = lambda text: self._sub(text, variables, e)  # noqa: E731
        package, executable = sub(e.attrib["pkg"]), sub(e.attrib["exec"])
        if package != "metaloco":
            raise LaunchError(f"{self.path}:{e.line}: <node pkg='{package}'>: metaloco up starts package metaloco's "
                              "nodes only (use ros2 launch for others)")
        if executable not in EXECUTABLES:
            raise LaunchError(f"{self.path}:{e.line}: <node exec='{executable}'>: metaloco has no such node; "
                              f"known: {sorted(EXECUTABLES)}")
        node = NodeLaunch(package, executable, sub(e.attrib.get("name", executable)),
                          sub(e.attrib.get("namespace", "")), e.line)
        for child in e.children:
            if not self._enabled(child, variables):
                continue
            if child.tag == "remap":
                node.remaps.append((self._sub(child.attrib["from"], variables, child),
                                    self._sub(child.attrib["to"], variables, child)))
            elif "from" in child.attrib:
                file = Path(self._sub(child.attrib["from"], variables, child))
                if not file.is_file():
                    raise LaunchError(f"{self.path}:{child.line}: parameter file {file} not found")
                node.params.append(("from", str(file)))
            else:
                name, value = (self._sub(child.attrib[k], variables, child) for k in ("name", "value"))
                try:
                    param_yaml(value)
                except ValueError as err:
                    raise LaunchError(f"{self.path}:{child.line}: <param name='{name}'>: {err}") from None
                node.params.append((name, value))
        return node

    def _enabled(self, e: Element, variables: dict[str, str]) -> bool:
        for attr, want in (("if", True), ("unless", False)):
            if attr in e.attrib and condition(self._sub(e.attrib[attr], variables, e), f"{self.path}:{e.line}") != want:
                return False
        return True

    def _sub(self, text: str, variables: dict[str, str], e: Element) -> str:
        def replace(match: re.Match) -> str:
            words = match.group(1).split()
            kind, rest = (words[0], words[1:]) if words else ("", [])
            where = f"{self.path}:{e.line}: <{e.tag}>"
            if kind == "var" and len(rest) == 1:
                if rest[0] not in variables:
                    raise LaunchError(f"{where}: $(var {rest[0]}) is not a declared argument (declare it above "
                                      f"its use); known: {sorted(variables)}")
                return variables[rest[0]]
            if kind == "find-pkg-share" and len(rest) == 1:
                if rest[0] != "metaloco":
                    raise LaunchError(f"{where}: $(find-pkg-share {rest[0]}): metaloco up knows package metaloco only")
                from metaloco.paths import share_dir

                return str(share_dir())
            if kind == "env" and len(rest) in (1, 2):
                if rest[0] not in os.environ and len(rest) == 1:
                    raise LaunchError(f"{where}: environment variable {rest[0]} is not set (give a default: "
                                      f"$(env {rest[0]} DEFAULT))")
                return os.environ.get(rest[0], rest[1] if len(rest) == 2 else "")
            if kind == "dirname" and not rest:
                return str(self.path.resolve().parent)
            raise LaunchError(f"{where}: unsupported substitution $({match.group(1)}); metaloco up understands "
                              "$(var NAME), $(find-pkg-share metaloco), $(env NAME [DEFAULT]) and $(dirname)")

        return _SUBSTITUTION.sub(replace, text)


def param_yaml(value: str) -> str:
    """A `<param value>` as rcl's `-p name:=VALUE` needs it, typed the way ros2 launch types it.

    The text is read as YAML, as launch_ros does: "true" is a bool, "3" an int, "[1, 2]" a list of
    ints, "'3'" the string 3. What ros2 launch refuses is refused here too, so the file behaves the
    same under both runners.

    Raises:
        ValueError: The value is empty, a mapping, or a list that is empty or of mixed types
            (ros2 launch refuses these; quote a string, e.g. value="''" for an empty one).
    """
    try:
        typed = yaml.safe_load(value)
    except yaml.YAMLError as err:
        raise ValueError(f"value {value!r} is not valid YAML: {err}") from None
    if isinstance(typed, list):
        kinds = {type(v) for v in typed}
        if len(kinds) != 1 or not kinds <= {bool, int, float, str}:
            raise ValueError(f"value {value!r}: a list parameter needs items of one type (bool, int, float, str)")
    elif type(typed) not in (bool, int, float, str):
        raise ValueError(f"value {value!r} reads as {type(typed).__name__}, which ros2 launch refuses; quote "
                         "a string (value=\"''\" for an empty one)")
    text = yaml.safe_dump(typed, default_flow_style=True, width=1 << 30).strip()
    return text[:-3].strip() if text.endswith("...") else text  # a scalar document ends with "..."


def condition(value: str, where: str) -> bool:
    """A launch condition's truth, as ROS 2 reads it."""
    lowered = value.strip().lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise LaunchError(f"{where}: condition must be true, false, 1 or 0, got {value!r}")


def parse_args(args: Sequence[str], path: Path | str = "") -> dict[str, str]:
    """`name:=value` launch arguments as a dict."""
    out = {}
    for arg in args:
        name, sep, value = arg.partition(":=")
        if not sep or not name:
            raise LaunchError(f"{path}: launch arguments are name:=value, got {arg!r}")
        out[name] = value
    return out


def node_class(executable: str) -> type:
    """The Node class behind one of metaloco's executables."""
    module, _, cls = EXECUTABLES[executable].partition(":")
    return getattr(importlib.import_module(module), cls)


class LaunchRunner:
    """Starts a launch file's nodes in this process, each spun by its own executor thread.

    One `SingleThreadedExecutor` per node, each in its own thread, is the multi-threaded executor
    here: nodes never wait for each other's callbacks (as separate processes would not), and it
    costs ~0.8 ms of CPU per published-and-received message where rclpy's `MultiThreadedExecutor`
    took 5-30 ms and could not keep 200 Hz on this 2-core machine (measured with rclpy 9.1.2).

    Args:
        path: The .launch.xml file.
        args: `name:=value` launch arguments.
        context: The rclpy context to create the nodes in (initialised by the caller; None: the default).

    Raises:
        LaunchError: See `LaunchFile`.
    """

    def __init__(self, path: str | Path, args: Sequence[str] = (), context: Any = None):
        self.launch = LaunchFile(path)
        self.plan = self.launch.nodes(args)
        self.context = context
        self.nodes: dict[str, Any] = {}
        """Started nodes by name."""
        self.died: dict[str, BaseException] = {}
        """Nodes whose executor stopped on an exception, and the exception."""
        self._executors: dict[str, Any] = {}
        self._threads: dict[str, threading.Thread] = {}

    def start(self) -> dict[str, Any]:
        """Create every node in file order and start spinning each. If one fails, the ones created are destroyed.

        Returns:
            The nodes by name.

        Raises:
            LaunchError: A node failed to start; the message names the file, the line, the node and why.
        """
        from rclpy.executors import SingleThreadedExecutor

        for plan in self.plan:
            try:
                node = node_class(plan.executable)(context=self.context, cli_args=plan.ros_args(),
                                                   use_global_arguments=False)
            except Exception as err:  # any failure of a node's constructor stops the launch, with its reason
                self.shutdown()
                raise LaunchError(f"{self.launch.path}:{plan.line}: node '{plan.name}' ({plan.package}/"
                                  f"{plan.executable}) failed to start: {err}") from err
            self.nodes[plan.name] = node
        for name, node in self.nodes.items():
            executor = SingleThreadedExecutor(context=self.context)
            executor.add_node(node)
            self._executors[name] = executor
            self._threads[name] = threading.Thread(target=self._spin, args=(name, executor), name=f"spin:{name}",
                                                   daemon=True)
            self._threads[name].start()
        return self.nodes

    def _spin(self, name: str, executor: Any) -> None:
        from rclpy.executors import ExternalShutdownException

        try:
            executor.spin()
        except ExternalShutdownException:
            pass
        except Exception as err:  # a node that dies leaves the others running, as a process would
            self.died[name] = err
            print(f"metaloco up: node '{name}' died: {type(err).__name__}: {err}", file=sys.stderr)

    def wait(self, poll_s: float = 0.2) -> None:
        """Block until the context shuts down (Ctrl-C, SIGTERM) or every node has stopped."""
        import rclpy

        while rclpy.ok(context=self.context) and any(t.is_alive() for t in self._threads.values()):
            time.sleep(poll_s)

    def stop_node(self, name: str) -> None:
        """Stop and destroy one node while the others keep running (a node dying)."""
        node = self.nodes.pop(name)
        executor = self._executors.pop(name, None)
        if executor is not None:
            executor.shutdown(timeout_sec=2.0)
        thread = self._threads.pop(name, None)
        if thread is not None:
            thread.join(timeout=2.0)
        node.destroy_node()

    def shutdown(self) -> None:
        """Stop every node, last started first."""
        for name in reversed(list(self.nodes)):
            self.stop_node(name)


def run_launch(path: str, args: list[str]) -> int:
    """`metaloco up FILE [name:=value ...]`: run a launch file's nodes in this process until Ctrl-C or SIGTERM.

    Args:
        path: The .launch.xml file.
        args: Launch arguments, e.g. ["robot:=a1", "use_adaptation:=false"].

    Returns:
        0 after a clean shutdown, 2 if the file or a node could not start (the reason is printed).
    """
    import rclpy

    from metaloco.ros_pkgs.ros_env import ensure_localhost_discovery

    ensure_localhost_discovery()
    try:
        runner = LaunchRunner(path, args)
    except LaunchError as err:
        print(f"metaloco up: error: {err}", file=sys.stderr)
        return 2
    with rclpy.init():
        try:
            nodes = runner.start()
        except LaunchError as err:
            print(f"metaloco up: error: {err}", file=sys.stderr)
            return 2
        print(f"metaloco up: {path}: running {', '.join(nodes)} (Ctrl-C to stop)", file=sys.stderr)
        try:
            runner.wait()
        except KeyboardInterrupt:
            pass
        finally:
            runner.shutdown()
    return 0


def run_node(factory: Callable[[], Any], prog: str, args: list[str] | None = None) -> int:
    """Run one node as a process (the console scripts): clean exit on Ctrl-C and SIGTERM.

    Args:
        factory: The Node class.
        prog: The executable's name, for messages.
        args: Command line (default: sys.argv), with any `--ros-args`.

    Returns:
        0 after a clean shutdown, 2 if the node could not start (the reason is printed).
    """
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    from metaloco.ros_pkgs.ros_env import ensure_localhost_discovery

    ensure_localhost_discovery()
    with rclpy.init(args=args):
        try:
            node = factory()
        except Exception as err:  # bad parameters, a missing model, a driver that does not connect
            print(f"{prog}: error: {err}", file=sys.stderr)
            return 2
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        try:
            executor.spin()
        except (KeyboardInterrupt, ExternalShutdownException):
            pass
        finally:
            node.destroy_node()
    return 0
