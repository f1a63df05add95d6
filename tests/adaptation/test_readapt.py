"""readapt_iterations / readapt_every: phi re-adapted to phase 3's pi, alternating with phase 3's blocks."""

import hashlib
import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from metaloco.adaptation.export import _ProbeEnv, load_run_config
from metaloco.adaptation.networks import AdapterGraph
from metaloco.adaptation.train import adapter_state, make_distillation_runner, readapt_folder
from metaloco.adaptation.train_config import load_train_config
from metaloco.paths import config_dir
from metaloco.schema import ConfigError


@pytest.fixture(scope="module")
def alternating_run(tmp_path_factory):
    """Smoke shapes: phase 3 in two blocks of one iteration, phi re-adapted (one iteration) after each."""
    from metaloco.adaptation.train import train

    cfg = load_train_config("smoke")
    cfg.phase1_iterations = cfg.phase2_iterations = cfg.robust_iterations = 1
    cfg.finetune_iterations, cfg.readapt_every, cfg.readapt_iterations = 2, 1, 1
    out = tmp_path_factory.mktemp("alternating_run")
    lines: list[str] = []
    train(cfg, out, log=lines.append)
    return cfg, out, lines


def _load(path):
    return torch.load(path, weights_only=True)["alg"]


def _phi(run, name):
    return adapter_state(_load(run / name / "checkpoint.pt")["student_state_dict"])


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_phase3_blocks_alternate_with_readaptations_of_phi(alternating_run):
    cfg, run, lines = alternating_run
    assert cfg.finetune_blocks() == [1, 2]
    order = [line.split("]")[0] + "]" for line in lines
             if " it " in line and line.startswith(("[phase3]", "[readapt"))]
    assert order == ["[phase3]", f"[{readapt_folder(1)}]", "[phase3]", f"[{readapt_folder(2)}]"]
    phase2, first, last = _phi(run, "phase2"), _phi(run, readapt_folder(1)), _phi(run, readapt_folder(2))
    assert not _equal(first, phase2) and not _equal(last, first)  # each re-adaptation trained phi
    tuned = _load(run / "phase3" / "checkpoint.pt")["actor_state_dict"]
    # phase 3's second block ran pi on the phi of the first re-adaptation, not phase 2's
    assert _equal(adapter_state(tuned), first)
    # the last re-adaptation's teacher and student policy are phase 3's final pi; the first's are not
    final_mlp = {k: v for k, v in tuned.items() if k.startswith("mlp.")}
    for name, expected in ((readapt_folder(2), True), (readapt_folder(1), False)):
        saved = _load(run / name / "checkpoint.pt")
        for part in ("teacher_state_dict", "student_state_dict"):
            mlp = {k: v for k, v in saved[part].items() if k.startswith("mlp.")}
            assert _equal(mlp, final_mlp) is expected, (name, part)


def test_a_later_phase3_block_is_a_planned_start_not_a_resume(alternating_run):
    """Block 2 continues phase 3's checkpoint under its own seed offset, as it did before resumes drew fresh seeds;
    only a checkpoint past where a block starts gets a resume's seed."""
    _, _, lines = alternating_run
    continued = [line for line in lines if line.startswith("[phase3] resuming at iteration 1")]
    assert continued and not any("seeded" in line for line in continued), continued


def test_the_export_ships_the_last_readapted_phi_and_keeps_phase_2s_before_phase_3(alternating_run):
    cfg, run, _ = alternating_run
    probe = _ProbeEnv(load_run_config(run))
    students = {}
    for name, source in (("adapter.onnx", readapt_folder(2)), ("before_phase3/adapter.onnx", "phase2")):
        saved = _load(run / source / "checkpoint.pt")
        runner = make_distillation_runner(cfg, probe, saved["teacher_state_dict"])
        runner.alg.load(saved, None, strict=True)
        students[name] = runner.alg.student
    rng = np.random.default_rng(0)
    history = rng.normal(0, 2, (1, cfg.history_length, 50)).astype(np.float32)
    outputs = {}
    for name, student in students.items():
        sess = ort.InferenceSession(str(run / "export" / name), providers=["CPUExecutionProvider"])
        got = sess.run(None, {"history": history})[0]
        with torch.no_grad():
            expected = AdapterGraph(student)(torch.from_numpy(history)).numpy()
        assert np.abs(got - expected).max() <= 1e-5, name
        outputs[name] = got
    assert np.abs(outputs["adapter.onnx"] - outputs["before_phase3/adapter.onnx"]).max() > 1e-6


def test_the_readaptations_are_counted_in_the_state_and_the_manifest(alternating_run):
    _, run, _ = alternating_run
    state = json.loads((run / "state.json").read_text())
    assert state["readapt"]["iterations"] == 2 and state["phase3"]["iterations"] == 2
    manifest = json.loads((run / "export" / "manifest.json").read_text())
    assert manifest["env_steps"] == sum(p["env_steps"] for p in state.values()) == (1 + 1 + 2 + 2 + 1) * 4 * 8


def test_a_finished_alternating_run_resumes_without_training_again(alternating_run):
    from metaloco.adaptation.train import train

    cfg, run, _ = alternating_run
    checkpoints = sorted(run.glob("**/checkpoint.pt"))
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in checkpoints}
    lines: list[str] = []
    train(cfg, run, log=lines.append, export=False)
    assert not [line for line in lines if " it " in line]  # every phase and block was already done
    assert not [line for line in lines if line.startswith("[config]")]  # the same settings: nothing to warn of
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in checkpoints} == before


def test_phase3_blocks_end_where_phi_is_readapted():
    cfg = load_train_config("smoke")
    cfg.finetune_iterations = 600
    assert cfg.finetune_blocks() == [600]
    cfg.readapt_iterations = 50
    assert cfg.finetune_blocks() == [600]  # once, after phase 3
    cfg.readapt_every = 200
    assert cfg.finetune_blocks() == [200, 400, 600]
    cfg.readapt_every = 250
    assert cfg.finetune_blocks() == [250, 500, 600]
    cfg.finetune_iterations = 0
    assert cfg.finetune_blocks() == []


@pytest.mark.parametrize("keys, message", [
    ("finetune_iterations: 0\nreadapt_iterations: 5\n", r"readapt_iterations.*5 is set without phase 3"),
    ("readapt_every: 5\n", r"readapt_every.*5 is set without readapt_iterations"),
])
def test_readaptation_without_what_it_needs_is_refused(tmp_path, keys, message):
    text = (config_dir() / "train" / "smoke.yaml").read_text().replace("finetune_iterations: 2\n", "")
    preset = tmp_path / "bad.yaml"
    preset.write_text(text + keys)
    with pytest.raises(ConfigError, match=message):
        load_train_config(str(preset))
