"""Training's numerics are pinned (adaptation/numerics.py): recorded, checked, and reported when they are not."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from metaloco.adaptation import numerics
from metaloco.adaptation.train import record_numerics

METALOCO = Path(sys.executable).parent / "metaloco"


def _env(**overrides: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "MKL_CBWR"}  # conftest pins this process; start bare
    env.update(overrides)
    return env


def _python(code: str, **env: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(**env), check=True)
    return done.stdout.strip().splitlines()[-1]


FINGERPRINT = "from metaloco.adaptation.numerics import pin, fingerprint; pin(); print(fingerprint())"


def test_a_smoke_run_records_pinned_numerics_and_the_commit_it_started_from(smoke_run):
    report = json.loads((smoke_run / "numerics.json").read_text())
    assert report["pinned"] is True and report["mkl_cbwr"] == "COMPATIBLE"
    manifest = json.loads((smoke_run / "export" / "manifest.json").read_text())
    assert manifest["numerics"]["fingerprint"] == report["fingerprint"]
    started = json.loads((smoke_run / "commit.json").read_text())
    assert manifest["commit"] == started["commit"] and manifest["uncommitted_changes"] == started["dirty"]


def test_the_pinned_kernels_do_not_depend_on_the_thread_count():
    one = _python(FINGERPRINT, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    two = _python(FINGERPRINT, OMP_NUM_THREADS="2", MKL_NUM_THREADS="2")
    assert one == two


def test_metaloco_train_pins_before_the_training_modules_load(tmp_path):
    preset = yaml.safe_load((Path(numerics.__file__).parents[1] / "config" / "train" / "smoke.yaml").read_text())
    preset.update(name="pin_check", phase1_iterations=1, phase2_iterations=1, finetune_iterations=0,
                  robust_iterations=0)
    (tmp_path / "pin_check.yaml").write_text(yaml.safe_dump(preset))
    done = subprocess.run([str(METALOCO), "train", "--preset", str(tmp_path / "pin_check.yaml"), "--out",
                           str(tmp_path / "run"), "--no-export", "--seed", "7"], capture_output=True, text=True,
                          env=_env())
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "run" / "numerics.json").read_text())["pinned"] is True
    assert "[numerics] MKL_CBWR=COMPATIBLE" in done.stderr
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["seed"] == 7  # --seed over the preset's 0


def test_a_pin_after_mkl_started_is_reported_not_trusted():
    auto = _python("from metaloco.adaptation.numerics import fingerprint; print(fingerprint())")
    if auto == _python(FINGERPRINT):
        pytest.skip("on this CPU MKL's automatic branch computes what COMPATIBLE does")
    late = ("import json, torch; torch.ones(64, 64) @ torch.ones(64, 64)\n"
            "from metaloco.adaptation import numerics; numerics.pin(); r = numerics.check()\n"
            "print(json.dumps([r['pinned'], numerics.warning(r)]))")
    pinned, warning = json.loads(_python(late))
    assert pinned is False
    assert "initialised before the numerics were pinned" in warning and "MKL_CBWR=COMPATIBLE" in warning


def test_a_branch_the_user_set_is_kept_and_named():
    code = ("import json; from metaloco.adaptation import numerics; numerics.pin(); r = numerics.check()\n"
            "print(json.dumps([r['mkl_cbwr'], r['pinned'], numerics.warning(r)]))")
    branch, pinned, warning = json.loads(_python(code, MKL_CBWR="AVX2"))
    assert (branch, pinned) == ("AVX2", False)
    assert "MKL_CBWR=AVX2 in the environment" in warning


def test_a_resume_on_other_kernels_warns_and_keeps_where_it_started(tmp_path):
    started = {"mkl_cbwr": "AUTO", "pinned": False, "fingerprint": "0123456789abcdef", "cpu": "elsewhere",
               "torch_threads": 16, "torch": "2.13.0+cpu"}
    (tmp_path / "numerics.json").write_text(json.dumps(started))
    lines: list[str] = []
    report = record_numerics(tmp_path, lines.append)
    assert any("started with kernels 0123456789abcdef" in line and "not match an uninterrupted run" in line
               for line in lines)
    assert json.loads((tmp_path / "numerics.json").read_text())["resumed_from"] == started
    assert report["fingerprint"] != started["fingerprint"]


def test_a_resume_on_the_same_torch_kernels_but_another_physics_layer_warns(tmp_path):
    """The torch fingerprint alone missed a CPU change once (Intel Xeon -> AMD EPYC); the layers catch it."""
    here = numerics.check()
    started = {**here, "layers": {**here["layers"], "pybullet": "0000000000000000"}}
    (tmp_path / "numerics.json").write_text(json.dumps(started))
    lines: list[str] = []
    record_numerics(tmp_path, lines.append)
    assert any("not match an uninterrupted run" in line and "0000000000000000" in line for line in lines)


def test_layer_fingerprints_are_the_same_in_a_fresh_process_and_follow_the_cpu_features_in_use():
    code = "from metaloco.adaptation.numerics import layer_fingerprints as f; import json; print(json.dumps(f()))"
    here = json.loads(_python(code))
    assert here == numerics.layer_fingerprints() and set(here) == {"numpy", "libm", "pybullet"}
    # glibc picks its math routines by CPU (FMA or not); with FMA hidden the physics computes other last bits
    no_fma = json.loads(_python(code, GLIBC_TUNABLES="glibc.cpu.hwcaps=-AVX2,-FMA,-AVX512F"))
    if no_fma == here:
        pytest.skip("this CPU has no FMA, or this C library does not dispatch on it")
    assert no_fma["libm"] != here["libm"]
