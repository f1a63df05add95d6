"""The model the ROS 2 tests run: the shipped A1 models when they fit this code, else a smoke export."""

import shutil
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
import rclpy

from metaloco.adaptation.runtime import load_policy
from metaloco.hardware.robot_config import load_robot
from metaloco.schema import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def usable_model(folder: Path) -> bool:
    """Whether `folder` holds a policy, adapter and prior that load for the A1 with this code's gait."""
    if not all((folder / f).is_file() for f in ("policy.onnx", "adapter.onnx", "prior.json")):
        return False
    try:
        policy = load_policy(folder, load_robot("a1"))
        return policy.n_actions == policy.action_map().n_actions
    except (ConfigError, ValueError):
        return False


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    """models/a1 when it holds a model for this code, else an untrained `smoke` export made once per session."""
    shipped = ROOT / "models" / "a1"
    if usable_model(shipped):
        return shipped
    run = tmp_path_factory.getbasetemp() / "smoke_model"
    if not usable_model(run / "export"):
        code = f"from metaloco.adaptation.train import train; train('smoke', {str(run)!r})"
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=600)
    return run / "export"


@pytest.fixture
def context():
    """A private rclpy context per test (no global init to leak between tests)."""
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    yield ctx
    rclpy.shutdown(context=ctx)


@pytest.fixture
def with_latent_input(model_dir, tmp_path):
    """`with_latent_input(value, dest=None)`: a copy of `model_dir` whose policy.onnx says `latent_input: value`."""
    return lambda value, dest=None: relabel_latent_input(model_dir, value, dest or tmp_path / f"model_{value}")


def relabel_latent_input(model_dir: Path, value: str, dest: Path) -> Path:
    """A copy of a model folder whose policy.onnx says `latent_input: value` (the phase-3 flag, see runtime.py).

    The graph is the same; only the metadata differs, so a test can hold a node to either contract whichever
    model (shipped or smoke) this checkout has.
    """
    shutil.copytree(model_dir, dest, ignore=shutil.ignore_patterns("before_phase3"))
    model = onnx.load(str(dest / "policy.onnx"))
    props = {p.key: p.value for p in model.metadata_props}
    props["latent_input"] = value
    del model.metadata_props[:]
    for key, text in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, text
    onnx.save(model, str(dest / "policy.onnx"))
    return dest
