"""Node parameters: one typed dataclass per node, declared as ROS parameters with descriptors.

metaloco has one configuration system (`metaloco.schema`); ROS parameters are read into the same
dataclasses. `declare(node, Config)` declares every field as a read-only parameter whose descriptor
carries the field's doc, type and range, so rclpy itself refuses an out-of-range or mistyped value
(from `--ros-args -p`, a launch file or `config/nodes.yaml`) with a reason, and `from_dict` then
checks the rest (allowed values) with an error naming the node and the parameter.

The deployed values live in `config/nodes.yaml`; the defaults here let a node start on its own.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType
from rclpy.node import Node

from metaloco.adaptation.estimator import LATENT_SOURCES
from metaloco.paths import models_dir
from metaloco.schema import ConfigError, from_dict, spec

T = TypeVar("T")

_TYPES = {bool: ParameterType.PARAMETER_BOOL, int: ParameterType.PARAMETER_INTEGER,
          float: ParameterType.PARAMETER_DOUBLE, str: ParameterType.PARAMETER_STRING}


@dataclass
class PolicyNodeConfig:
    """Parameters of `policy_node`."""

    robot: str = spec("a1", doc="Robot description: a name under config/robots/ or a YAML path.")
    model_dir: str = spec("", doc="Folder holding policy.onnx and prior.json ('' means models/<robot>).")
    rate_hz: float = spec(0.0, range=(0.0, 2000.0),
                          doc="Loop rate; 0 runs at the model's control period (other rates are for benchmarks).")
    input_timeout_periods: float = spec(3.0, range=(1.0, 50.0),
                                        doc="joint_states or imu/data older than this many periods: no command.")
    cmd_vel_timeout_s: float = spec(0.5, range=(0.01, 3600.0),
                                    doc="A cmd_vel older than this counts as zero velocity (a dead joystick stops).")
    latent_timeout_s: float = spec(1.0, range=(0.05, 60.0),
                                   doc="adaptation/latent silent this long (counted in control cycles): the last "
                                       "latent is kept, and said so; a policy with latent_input 'adapter' stops "
                                       "commanding instead.")
    initial_latent: str = spec("prior_mean", choices=("prior_mean", "nominal"),
                               doc="Latent used until adaptation/latent arrives: the prior mean or the nominal task's.")
    diagnostics_period_s: float = spec(1.0, range=(0.05, 60.0), doc="Period of the diagnostics summary.")


@dataclass
class AdaptationNodeConfig:
    """Parameters of `adaptation_node`."""

    robot: str = spec("a1", doc="Robot description: a name under config/robots/ or a YAML path.")
    model_dir: str = spec("", doc="Folder holding policy.onnx, adapter.onnx and prior.json ('' means models/<robot>).")
    rate_hz: float = spec(10.0, range=(0.5, 200.0), doc="How often the adapter runs on the history (RMA: ~10 Hz).")
    min_observations: int = spec(10, range=(1, 100000),
                                 doc="Observations in the history before a latent is published.")
    gap_reset_s: float = spec(0.5, range=(0.01, 60.0),
                              doc="A gap this long in policy/obs_action restarts the history and the estimator.")
    latent_source: str = spec("fused", choices=LATENT_SOURCES,
                              doc="What adaptation/latent carries: 'fused' (the estimate fused with the prior) or "
                                  "'raw' (the adapter's output, which a phase-3 policy was fine-tuned on; see "
                                  "models/a1/MODEL_CARD.md for what each costs).")
    diagnostics_period_s: float = spec(1.0, range=(0.05, 60.0), doc="Period of the diagnostics summary.")


@dataclass
class BridgeConfig:
    """Parameters of `robot_bridge`."""

    robot: str = spec("a1", doc="Robot description: a name under config/robots/ or a YAML path.")
    driver: str = spec("sim", choices=("sim", "dynamixel", "serial_bridge"), doc="Which robot interface to drive.")
    port: str = spec("", doc="Serial port of a hardware driver ('' means the robot YAML's).")
    lockstep: bool = spec(False, doc="sim: step physics only once the policy answered the last state; safety runs "
                                     "on sim time.")
    lockstep_timeout_s: float = spec(0.5, range=(0.0, 10.0),
                                     doc="lockstep: wall time to wait for the policy's answer before stepping anyway.")
    auto_activate: bool = spec(False, doc="sim: stand at start and hand over to the policy once its commands flow.")
    stand_ramp_s: float = spec(1.0, range=(0.0, 10.0), doc="Time to ramp from the pose at arming to the default pose.")
    stale_periods: float = spec(3.0, range=(1.0, 20.0), doc="A policy command older than this many periods: damping.")
    reconnect_period_s: float = spec(0.2, range=(0.01, 10.0), doc="Time between reconnect attempts of a lost link.")
    sim_seed: int = spec(0, range=(0, 2**31 - 1), doc="sim: seed of terrain randomness.")
    diagnostics_period_s: float = spec(0.5, range=(0.05, 60.0), doc="Period of the diagnostics summary.")


def declare(node: Node, cls: type[T]) -> T:
    """Declare every field of dataclass `cls` as a read-only parameter of `node` and read them into `cls`.

    Args:
        node: The node.
        cls: A dataclass whose fields use `metaloco.schema.spec`.

    Returns:
        The validated configuration.

    Raises:
        rclpy.exceptions.InvalidParameterValueException: A value out of its range (rclpy's reason).
        rclpy.exceptions.InvalidParameterTypeException: A value of the wrong type.
        ConfigError: A value outside the allowed choices.
    """
    hints = get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        values[f.name] = node.declare_parameter(f.name, default, descriptor(f, tp)).value
    return from_dict(cls, values, f"node '{node.get_fully_qualified_name()}' parameters")


def descriptor(f: dataclasses.Field, tp: type) -> ParameterDescriptor:
    """The ROS descriptor of one field: doc, type, range and allowed values, read-only."""
    meta = f.metadata
    desc = ParameterDescriptor(description=meta.get("doc", ""), type=_TYPES[tp], read_only=True)
    low, high = meta.get("range") or (None, None)
    if tp is float and meta.get("range"):
        desc.floating_point_range = [FloatingPointRange(from_value=float(low), to_value=float(high), step=0.0)]
    elif tp is int and meta.get("range"):
        desc.integer_range = [IntegerRange(from_value=int(low), to_value=int(high), step=1)]
    if meta.get("choices"):
        desc.additional_constraints = f"one of {list(meta['choices'])}"
    return desc


def config_fields(cls: type) -> list[str]:
    """The parameter names of a node config."""
    return [f.name for f in dataclasses.fields(cls)]


def model_path(model_dir: str, robot_name: str) -> Path:
    """The model folder a node runs: `model_dir`, or models/<robot> when empty.

    Raises:
        ConfigError: The folder does not exist (with how to make one).
    """
    path = Path(model_dir) if model_dir else models_dir() / robot_name
    if not path.is_dir():
        raise ConfigError(str(path), "model_dir", "model folder not found; ship one with `metaloco train --ship "
                          f"models/{robot_name}` or pass model_dir:=<folder with policy.onnx>")
    return path
