"""A model that does not fit the robot is refused, naming the file, the key and both values."""

import shutil

import numpy as np
import onnx
import pytest
import torch

from metaloco.adaptation.runtime import load_adapter, load_policy
from metaloco.hardware.robot_config import load_robot
from metaloco.schema import ConfigError


def test_model_loads_for_its_robot(smoke_run):
    policy = load_policy(smoke_run / "export", load_robot("a1"))
    assert policy(np.zeros(50), np.zeros(8)).shape == (15,)
    adapter = load_adapter(smoke_run / "export", policy)
    assert adapter(np.zeros((1, 50, 50))).shape == (8,)


def test_model_for_other_gains_is_refused(smoke_run):
    # The Aliengo has the same joint names but other gains: an A1 model must not drive it.
    with pytest.raises(ConfigError, match=r"policy.onnx: 'kp': model has \[20.0.*robot 'aliengo'.*40.0"):
        load_policy(smoke_run / "export", load_robot("aliengo"))


def test_model_with_wrong_input_size_is_refused(smoke_run, tmp_path):
    """A graph whose obs input does not match its own observation layout."""
    folder = tmp_path / "bad"
    folder.mkdir()
    good = onnx.load(str(smoke_run / "export" / "policy.onnx"))

    class Wrong(torch.nn.Module):
        def forward(self, obs, latent):
            return torch.cat([obs[:, :10], latent[:, :5]], dim=-1)

    path = folder / "policy.onnx"
    torch.onnx.export(Wrong(), (torch.zeros(1, 40), torch.zeros(1, 8)), str(path), input_names=["obs", "latent"],
                      output_names=["actions"], dynamo=False)
    bad = onnx.load(str(path))
    for prop in good.metadata_props:
        bad.metadata_props.add(key=prop.key, value=prop.value)
    onnx.save(bad, str(path))
    with pytest.raises(ConfigError, match=r"'obs': input 'obs' has 40 values but obs_layout sums to 50"):
        load_policy(folder, load_robot("a1"))


def test_model_without_metadata_is_refused(smoke_run, tmp_path):
    model = onnx.load(str(smoke_run / "export" / "policy.onnx"))
    del model.metadata_props[:]
    onnx.save(model, str(tmp_path / "policy.onnx"))
    with pytest.raises(ConfigError, match="metadata key missing"):
        load_policy(tmp_path, load_robot("a1"))


def test_model_with_an_unknown_latent_input_is_refused(smoke_run, tmp_path):
    model = onnx.load(str(smoke_run / "export" / "policy.onnx"))
    for prop in model.metadata_props:
        if prop.key == "latent_input":
            prop.value = "oracle"
    onnx.save(model, str(tmp_path / "policy.onnx"))
    with pytest.raises(ConfigError, match=r"'latent_input': got 'oracle'; this metaloco knows \['any', 'adapter'\]"):
        load_policy(tmp_path, load_robot("a1"))


def test_missing_and_corrupt_model_files(tmp_path):
    with pytest.raises(ConfigError, match=r"policy.onnx: model file not found"):
        load_policy(tmp_path, load_robot("a1"))
    (tmp_path / "policy.onnx").write_bytes(b"not a model")
    with pytest.raises(ConfigError, match="not a loadable ONNX model"):
        load_policy(tmp_path, load_robot("a1"))


def test_adapter_of_another_history_length_is_refused(smoke_run, tmp_path):
    shutil.copy(smoke_run / "export" / "policy.onnx", tmp_path / "policy.onnx")

    class Short(torch.nn.Module):
        def forward(self, history):
            return history[:, 0, :8]

    torch.onnx.export(Short(), (torch.zeros(1, 20, 50),), str(tmp_path / "adapter.onnx"), input_names=["history"],
                      output_names=["latent"], dynamo=False)
    policy = load_policy(tmp_path, load_robot("a1"))
    with pytest.raises(ConfigError, match=r"input 'history' is \(20, 50\); policy.onnx expects \(50, 50\)"):
        load_adapter(tmp_path, policy)
