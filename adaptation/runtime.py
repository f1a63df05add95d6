"""Running exported models with onnxruntime: what the policy node and `metaloco eval` share.

`load_policy` reads `policy.onnx` and checks it against a robot description before
anything runs: joint names and order, gains, control period, observation layout and
input shapes. A model that does not match is refused with an error naming the file,
the key and both values. Nothing here unpickles anything.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from metaloco.hardware.robot_config import RobotConfig
from metaloco.schema import ConfigError
from metaloco.sim.gait import GAIT_OUTPUTS, ActionMap
from metaloco.sim.observation import obs_layout

LATENT_INPUTS = ("any", "adapter")
"""Metadata `latent_input` of `policy.onnx` (optional; 'any' when absent, as in models exported before it):
'any': pi reads a latent from any source (adapter, nominal, true); 'adapter': pi was fine-tuned on the adapter's
estimate (phase 3) and must only run on it: it was never trained on a fixed or true latent (one such policy ran
at 0.9 m/s on a 0.5 m/s command with one; MODEL_CARD.md, phase 3)."""
BEFORE_PHASE3 = "before_phase3"
"""With phase 3, a sub-folder of the model folder with the same artifacts but phase 1's pi: the policy `nominal`,
`oracle` and adaptation off are defined for (pi fine-tuned on z_hat no longer reads a fixed or true latent as a
task); `metaloco eval --model-dir` runs it like any model folder."""
POLICY_KEYS = ("robot", "joint_names", "default_joint_pos", "action_scale", "kp", "kd", "torque_limits",
               "control_dt", "obs_layout", "latent_dim", "history_length", "gait", "metaloco_version")


def latent_input(meta: dict) -> str:
    """A policy's `latent_input` from its metadata ('any' when the key is absent; see LATENT_INPUTS)."""
    return str(meta.get("latent_input", "any"))


def session(path: Path) -> ort.InferenceSession:
    """A single-threaded CPU session (predictable latency next to a control loop)."""
    if not path.is_file():
        raise ConfigError(str(path), "", "model file not found")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types
        raise ConfigError(str(path), "", f"not a loadable ONNX model: {err}") from None


def metadata(sess: ort.InferenceSession, path: Path, keys: tuple[str, ...]) -> dict:
    """The model's metadata_props, JSON-decoded where they are JSON, with every key in `keys` required."""
    raw = sess.get_modelmeta().custom_metadata_map
    missing = [k for k in keys if k not in raw]
    if missing:
        raise ConfigError(str(path), missing[0], f"metadata key missing; a metaloco model carries {list(keys)}")
    out = {}
    for key, value in raw.items():
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _input_dim(sess: ort.InferenceSession, name: str, path: Path, axis: int = -1) -> int:
    inputs = {i.name: i for i in sess.get_inputs()}
    if name not in inputs:
        raise ConfigError(str(path), "inputs", f"expected an input named '{name}', found {sorted(inputs)}")
    dim = inputs[name].shape[axis]
    if not isinstance(dim, int):
        raise ConfigError(str(path), name, f"input '{name}' needs a fixed size on axis {axis}, got {dim!r}")
    return dim


@dataclass
class OnnxPolicy:
    """`policy.onnx`: (obs, latent) -> actions, with its metadata."""

    path: Path
    sess: ort.InferenceSession
    meta: dict
    obs_dim: int
    latent_dim: int
    n_actions: int

    @property
    def latent_input(self) -> str:
        """'adapter' when pi must only run on the adapter's live estimate, else 'any' (see LATENT_INPUTS)."""
        return latent_input(self.meta)

    def __call__(self, obs: np.ndarray, latent: np.ndarray) -> np.ndarray:
        out = self.sess.run(["actions"], {"obs": obs.reshape(1, -1).astype(np.float32),
                                          "latent": latent.reshape(1, -1).astype(np.float32)})
        return out[0][0]

    def action_map(self) -> ActionMap:
        """The joint-target mapping this model was trained with."""
        return ActionMap.from_metadata(self.meta["default_joint_pos"], float(self.meta["action_scale"]),
                                       json.dumps(self.meta["gait"]))


def load_policy(model_dir: str | Path, robot: RobotConfig, filename: str = "policy.onnx") -> OnnxPolicy:
    """Load `policy.onnx` and check it against `robot`.

    Raises:
        ConfigError: The file is missing or broken, or the model does not match the robot.
    """
    path = Path(model_dir) / filename
    sess = session(path)
    meta = metadata(sess, path, POLICY_KEYS)
    n = robot.n_joints

    def mismatch(key: str, model_value, robot_value) -> ConfigError:
        return ConfigError(str(path), key, f"model has {model_value}, robot '{robot.name}' ({robot.source}) "
                                           f"has {robot_value}; the model was trained for another robot setup")

    if meta["joint_names"] != robot.joint_names:
        raise mismatch("joint_names", meta["joint_names"], robot.joint_names)
    for key in ("kp", "kd", "default_joint_pos"):
        if not np.allclose(meta[key], getattr(robot, key)):
            raise mismatch(key, meta[key], getattr(robot, key))
    if abs(float(meta["control_dt"]) - robot.control_dt) > 1e-9:
        raise mismatch("control_dt", meta["control_dt"], robot.control_dt)
    obs_dim = _input_dim(sess, "obs", path)
    latent_dim = _input_dim(sess, "latent", path)
    n_actions = sess.get_outputs()[0].shape[-1]
    if n_actions != n + GAIT_OUTPUTS:
        raise ConfigError(str(path), "actions", f"model outputs {n_actions} actions; this metaloco's gait generator "
                                                f"needs {n + GAIT_OUTPUTS} ({n} joints + {GAIT_OUTPUTS} gait outputs)")
    layout = [tuple(x) for x in meta["obs_layout"]]
    expected = obs_layout(n, n + GAIT_OUTPUTS)
    if layout != expected:
        raise ConfigError(str(path), "obs_layout", f"model observes {layout}; this metaloco builds {expected}")
    if obs_dim != sum(s for _, s in layout):
        raise ConfigError(str(path), "obs", f"input 'obs' has {obs_dim} values but obs_layout sums to "
                                            f"{sum(s for _, s in layout)}")
    if latent_dim != int(meta["latent_dim"]):
        raise ConfigError(str(path), "latent", f"input 'latent' has {latent_dim} values, metadata latent_dim "
                                               f"says {meta['latent_dim']}")
    if latent_input(meta) not in LATENT_INPUTS:
        raise ConfigError(str(path), "latent_input", f"got {meta['latent_input']!r}; this metaloco knows "
                                                     f"{list(LATENT_INPUTS)}")
    return OnnxPolicy(path=path, sess=sess, meta=meta, obs_dim=obs_dim, latent_dim=latent_dim, n_actions=n_actions)


@dataclass
class OnnxAdapter:
    """`adapter.onnx`: history (1, H, obs_dim) -> latent."""

    path: Path
    sess: ort.InferenceSession
    history_length: int
    obs_dim: int

    def __call__(self, history: np.ndarray) -> np.ndarray:
        return self.sess.run(["latent"], {"history": history.astype(np.float32)})[0][0]


def load_adapter(model_dir: str | Path, policy: OnnxPolicy, filename: str = "adapter.onnx") -> OnnxAdapter:
    """Load `adapter.onnx` and check it fits `policy` (history length, observation and latent sizes)."""
    path = Path(model_dir) / filename
    sess = session(path)
    length = _input_dim(sess, "history", path, axis=1)
    obs_dim = _input_dim(sess, "history", path, axis=2)
    if length != int(policy.meta["history_length"]) or obs_dim != policy.obs_dim:
        raise ConfigError(str(path), "history", f"input 'history' is ({length}, {obs_dim}); policy.onnx expects "
                                                f"({policy.meta['history_length']}, {policy.obs_dim})")
    out = sess.get_outputs()[0].shape[-1]
    if out != policy.latent_dim:
        raise ConfigError(str(path), "latent", f"outputs {out} values; policy.onnx takes a latent of {policy.latent_dim}")
    return OnnxAdapter(path=path, sess=sess, history_length=length, obs_dim=obs_dim)


class OnnxFunction:
    """Any other single-input metaloco graph (encoder.onnx, robust.onnx)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.sess = session(self.path)
        self.input = self.sess.get_inputs()[0].name
        self.output = self.sess.get_outputs()[0].name

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.sess.run([self.output], {self.input: x.reshape(1, -1).astype(np.float32)})[0][0]
