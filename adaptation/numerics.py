"""The same training numbers on any x86 CPU: pin the math library's code path.

PPO amplifies a difference in the last bit of one matrix product into a different policy within tens of
iterations. torch's CPU build does its matrix products in Intel MKL, which picks its kernels by CPU at run
time (AVX-512 on one machine, AVX2 on the next), and the kernels round differently. Measured on the `full`
preset's phase 1 on one machine: MKL's AVX-512 (its automatic choice there), AVX2 and COMPATIBLE branches
give three different runs from iteration 10 on, and different curricula by iteration 60, while torch's own
vector kernels (`ATEN_CPU_CAPABILITY=avx2`) and numpy's dispatch left that run bit for bit as it was. This is
the likely reason two sessions' runs of one preset and commit gave different policies.

`pin()` selects MKL's Conditional Numerical Reproducibility branch COMPATIBLE, documented to give the same
results on Intel and compatible CPUs (measured here: also the same with 1 or 2 threads, and no slower at
these network sizes), and sends convolutions (the adapter) through MKL instead of oneDNN, whose JIT kernels
also follow the CPU. MKL reads `MKL_CBWR` on its first call, and importing rsl_rl already makes one: `pin()`
must run before the training modules are imported, which `metaloco train` does. `check()` finds out whether it did, by comparing a
fingerprint of the kernels in use with one computed in a fresh process.
"""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import sys

PINNED_ENV = {"MKL_CBWR": "COMPATIBLE"}
"""Environment that fixes MKL's code path (read at MKL's first call)."""


def pin() -> None:
    """Pin the kernels training uses; a value the user set in the environment is kept (and reported)."""
    for key, value in PINNED_ENV.items():
        os.environ.setdefault(key, value)
    import torch

    torch.backends.mkldnn.enabled = False


def fingerprint() -> str:
    """A hash of what this process's kernels compute on fixed inputs: a matrix product of a policy layer's
    size, a 1-D convolution of the adapter's kind and the activations in use. Equal fingerprints mean the
    same kernels, to the last bit."""
    import torch

    g = torch.Generator().manual_seed(0)
    x = torch.randn(1536, 256, generator=g)
    w = torch.randn(256, 128, generator=g)
    seq = torch.randn(64, 24, 50, generator=g)
    kernel = torch.randn(32, 24, 5, generator=g)
    with torch.no_grad():
        outputs = [x @ w, torch.nn.functional.conv1d(seq, kernel, stride=2),
                   torch.nn.functional.elu(x), torch.tanh(x), torch.exp(x.clamp(max=10))]
    h = hashlib.sha256()
    for out in outputs:
        h.update(out.numpy().tobytes())
    return h.hexdigest()[:16]


def layer_fingerprints() -> dict[str, str]:
    """Fingerprints of the other layers a run's numbers pass through, each a hash of what it computes on fixed
    inputs: numpy's vector math (which numpy picks by CPU: SVML on AVX-512, its own kernels or libm
    elsewhere), the C library's scalar math (`math.*`, glibc picks FMA variants by CPU) and a second of
    pybullet stepping the A1 (its contact solver). `fingerprint()` covers torch. Two machines whose torch
    fingerprints agree can still train differently (measured: session 10, Intel Xeon vs AMD EPYC); comparing
    these says in which layer."""
    import math

    import numpy as np
    import pybullet
    import pybullet_data

    x = np.random.default_rng(0).uniform(-3.0, 3.0, 4096)
    vector = [np.exp(x), np.sin(x), np.cos(x), np.tanh(x), np.log1p(np.abs(x)), np.arctan2(x, 1.5), x @ x]
    scalar = [f(v) for v in x[:512].tolist() for f in (math.exp, math.sin, math.cos, math.tanh, math.atan)]
    client = pybullet.connect(pybullet.DIRECT)
    try:
        pybullet.setAdditionalSearchPath(pybullet_data.getDataPath(), physicsClientId=client)
        pybullet.setGravity(0, 0, -9.81, physicsClientId=client)
        pybullet.setTimeStep(0.005, physicsClientId=client)
        pybullet.loadURDF("plane.urdf", physicsClientId=client)
        robot = pybullet.loadURDF("a1/a1.urdf", [0, 0, 0.35], physicsClientId=client)
        joints = [j for j in range(pybullet.getNumJoints(robot, physicsClientId=client))
                  if pybullet.getJointInfo(robot, j, physicsClientId=client)[2] == pybullet.JOINT_REVOLUTE]
        targets = [(-0.1, 0.8, -1.5)[i % 3] for i in range(len(joints))]
        pybullet.setJointMotorControlArray(robot, joints, pybullet.POSITION_CONTROL, targetPositions=targets,
                                           forces=[20.0] * len(joints), physicsClientId=client)
        for _ in range(200):
            pybullet.stepSimulation(physicsClientId=client)
        pos, orn = pybullet.getBasePositionAndOrientation(robot, physicsClientId=client)
        states = [s[:2] for s in pybullet.getJointStates(robot, joints, physicsClientId=client)]
    finally:
        pybullet.disconnect(client)

    def digest(values) -> str:
        return hashlib.sha256(np.asarray(values, dtype=np.float64).tobytes()).hexdigest()[:16]

    return {"numpy": digest(np.concatenate([np.ravel(v) for v in vector])), "libm": digest(scalar),
            "pybullet": digest([*pos, *orn, *(v for s in states for v in s)])}


def _reference_fingerprint() -> str:
    """The fingerprint of a fresh process with the pin in place before its first matrix product."""
    code = "from metaloco.adaptation.numerics import pin, fingerprint; pin(); print(fingerprint())"
    env = {**os.environ, **{k: os.environ.get(k, v) for k, v in PINNED_ENV.items()}}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return done.stdout.strip().splitlines()[-1]


def cpu_model() -> str:
    """The CPU model name (pybullet, libm and numpy compute differently on different ones)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def check() -> dict:
    """What numerics this process trains with (for the run folder and the manifest).

    Returns:
        `mkl_cbwr` (the branch in force), `pinned` (that branch is `PINNED_ENV`'s and took effect: this
        process computes what a freshly pinned one does), `fingerprint` (torch), `layers`
        (`layer_fingerprints()`), `cpu`, `torch_threads`, `torch`.
    """
    import torch

    mine = fingerprint()
    branch = os.environ.get("MKL_CBWR", "AUTO")
    took_effect = mine == _reference_fingerprint()
    return {"mkl_cbwr": branch, "pinned": took_effect and branch == PINNED_ENV["MKL_CBWR"],
            "fingerprint": mine, "layers": layer_fingerprints(), "cpu": cpu_model(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__}


def warning(report: dict) -> str | None:
    """Why a run with these numerics will not reproduce on another CPU, or None when it will."""
    if report["pinned"]:
        return None
    if report["mkl_cbwr"] != PINNED_ENV["MKL_CBWR"]:
        return (f"MKL_CBWR={report['mkl_cbwr']} in the environment: this run's numbers follow that branch, not "
                f"{PINNED_ENV['MKL_CBWR']}, and may not be reproduced on another CPU")
    return ("MKL was initialised before the numerics were pinned (MKL_CBWR is read at its first call): this run's "
            f"numbers follow this CPU; set MKL_CBWR={PINNED_ENV['MKL_CBWR']} before starting Python")
