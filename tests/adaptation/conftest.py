"""A smoke-trained run shared by the adaptation tests (trained once per session, ~20 s)."""

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> Path:
    from metaloco.adaptation.train import train

    out = tmp_path_factory.mktemp("smoke_run")
    lines: list[str] = []
    train("smoke", out, log=lines.append)
    assert any(line.startswith("[export]") for line in lines)
    return out
