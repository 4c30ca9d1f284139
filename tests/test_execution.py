"""The local execution layer: TLS with throw-away credentials, one thread per worker."""

from __future__ import annotations

import stat

import pytest

from l2lflow.client import socket_path
from l2lflow.execution import start_pools


def test_local_cluster_refuses_clients_without_credentials(tmp_path) -> None:
    from distributed import Client

    pools = start_pools({"backend": "local", "workers": 1}, local_directory=str(tmp_path))
    try:
        cluster = pools.clusters["cpu"]
        address = cluster.scheduler_address
        assert address.startswith("tls://")
        info = pools.client("cpu").scheduler_info()
        assert all(w["nthreads"] == 1 for w in info["workers"].values())
        assert pools.client("cpu").submit(lambda: 41 + 1).result(timeout=30) == 42
        # a stranger on the same machine: plain TCP, and TLS without the run's certificate
        with pytest.raises(Exception):  # noqa: B017 - any refusal will do
            Client(address.replace("tls://", "tcp://"), timeout=3)
        with pytest.raises(Exception):  # noqa: B017
            Client(address, timeout=3)
        dashboard = cluster.dashboard_link
        assert "127.0.0.1" in dashboard
    finally:
        pools.close()


def test_engine_socket_is_private(tmp_path) -> None:
    """Only the owner may connect to an engine's socket (it runs steps as that user)."""
    import subprocess
    import sys
    import time

    results = tmp_path / "results"
    proc = subprocess.Popen(
        [sys.executable, "-m", "l2lflow.engine", str(results), "--idle-timeout", "3"]
    )
    try:
        path = socket_path(results)
        for _ in range(200):
            try:
                mode = stat.S_IMODE(__import__("os").stat(path).st_mode)
                break
            except FileNotFoundError:
                time.sleep(0.05)
        else:
            pytest.fail("engine did not create its socket")
        assert mode & 0o077 == 0, oct(mode)
    finally:
        proc.wait(timeout=30)  # stops by itself after its idle timeout
    assert proc.returncode == 0
