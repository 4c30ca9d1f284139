"""Shared pytest fixtures."""

from __future__ import annotations

import shutil
import subprocess

import pytest


@pytest.fixture(scope="session")
def local_slurm() -> dict[str, str]:
    """A Slurm that answers (`.ci/slurm/start.sh` starts one; pytest never does), else skip.

    Returns the partitions and their states, e.g. ``{"batch": "idle", "gpus": "idle"}``.
    """
    if shutil.which("sinfo") is None:
        pytest.skip("no Slurm: sinfo not found (start one with .ci/slurm/start.sh)")
    try:
        out = subprocess.run(
            ["sinfo", "-h", "-o", "%R %t"], capture_output=True, text=True, timeout=5
        )
    except subprocess.TimeoutExpired:
        pytest.skip("no Slurm: sinfo did not answer within 5 s (.ci/slurm/start.sh)")
    if out.returncode != 0 or not out.stdout.strip():
        reason = (out.stderr.strip() or "no partitions").splitlines()[-1]
        pytest.skip(f"no Slurm: sinfo failed ({reason}); start one with .ci/slurm/start.sh")
    partitions: dict[str, str] = {}
    for line in out.stdout.split("\n"):
        if line.strip():
            name, state = line.split()[:2]
            partitions[name] = state
    return partitions
