"""The local execution layer: TLS with throw-away credentials, one thread per worker."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

import pytest

from l2lflow.execution import start_pools


def _pem_files(tmp_path: Path, name: str, security) -> tuple[str, str]:
    """Write a ``Security``'s in-memory client certificate and key to files (for ``ssl``)."""
    cert, key = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    cert.write_text(security.tls_client_cert)
    key.write_text(security.tls_client_key)
    return str(cert), str(key)


def _raw_tls(host: str, port: int, cert: tuple[str, str] | None) -> str:
    """Connect like a stranger that trusts ANY server (so no failure can be its own check of
    the server) and report what the scheduler did: 'alert: ...' when the server rejected the
    handshake, 'accepted' when it waited for a request."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if cert is not None:
        ctx.load_cert_chain(*cert)
    with socket.create_connection((host, port), timeout=10) as raw:
        try:
            with ctx.wrap_socket(raw) as tls:
                tls.settimeout(2.0)
                data = tls.recv(1)  # TLS 1.3 reports a refused client certificate here
                return "accepted" if data else "closed"
        except ssl.SSLError as exc:
            return f"alert: {exc.reason}"
        except TimeoutError:
            return "accepted"  # the handshake stood and the scheduler waits for our request


@pytest.mark.resilience
def test_local_scheduler_itself_refuses_strangers(tmp_path: Path) -> None:
    """The scheduler (server side) refuses a stranger: one with its own throw-away TLS
    credentials, one with TLS but no certificate, one without TLS; the run's own credentials
    pass the same probe, and a legitimate client runs a task."""
    from distributed import Client
    from distributed.security import Security

    pools = start_pools({"backend": "local", "workers": 1}, local_directory=str(tmp_path))
    try:
        cluster = pools.clusters["cpu"]
        address = cluster.scheduler_address
        assert address.startswith("tls://127.0.0.1:")
        host, port = address.removeprefix("tls://").rsplit(":", 1)
        clients_before = set(cluster.scheduler.clients)

        stranger = _pem_files(tmp_path, "stranger", Security.temporary())
        ours = _pem_files(tmp_path, "ours", cluster.security)
        outcomes = {
            "stranger's own credentials": _raw_tls(host, int(port), stranger),
            "no client certificate": _raw_tls(host, int(port), None),
            "the run's credentials": _raw_tls(host, int(port), ours),
        }
        with socket.create_connection((host, int(port)), timeout=10) as plain:
            try:  # not TLS: the scheduler answers with a TLS alert, or hangs up
                plain.sendall(b"\x00" * 64)
                plain.settimeout(10)
                reply = plain.recv(64)
                outcomes["no TLS"] = "closed" if not reply else f"record {reply[:1]!r}"
            except ConnectionResetError:
                outcomes["no TLS"] = "closed"
        print("\n" + "\n".join(f"{k}: {v}" for k, v in outcomes.items()))
        assert outcomes["stranger's own credentials"].startswith("alert: "), outcomes
        assert outcomes["no client certificate"].startswith("alert: "), outcomes
        assert outcomes["the run's credentials"] == "accepted", outcomes
        assert outcomes["no TLS"] in ("closed", "record b'\\x15'"), outcomes  # 0x15: TLS alert
        assert set(cluster.scheduler.clients) == clients_before  # no stranger got in

        legit = pools.client("cpu")
        info = legit.scheduler_info()
        assert all(w["nthreads"] == 1 for w in info["workers"].values())
        assert legit.submit(lambda: 41 + 1).result(timeout=30) == 42
        with Client(address, security=cluster.security, timeout=30) as second:
            assert second.submit(lambda: 6 * 7).result(timeout=30) == 42
    finally:
        pools.close()


@pytest.mark.resilience
def test_a_worker_killed_while_the_cluster_starts_does_not_fail_the_run(tmp_path: Path) -> None:
    """SIGKILL of the first worker process the moment it exists ("Nanny failed to start" in
    distributed): the cluster starts anyway, with all its workers, and runs tasks."""
    import threading
    import time

    import psutil

    killed: list[int] = []

    def kill_first_worker() -> None:
        me = psutil.Process()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            for child in me.children(recursive=True):
                try:
                    if "spawn_main" in " ".join(child.cmdline()):
                        child.kill()
                        killed.append(child.pid)
                        return
                except psutil.Error:
                    continue
            time.sleep(0.005)

    killer = threading.Thread(target=kill_first_worker, daemon=True)
    killer.start()
    pools = start_pools({"backend": "local", "workers": 2}, local_directory=str(tmp_path))
    try:
        killer.join(timeout=5)
        assert killed, "no worker process was seen to kill"
        assert pools.worker_count("cpu") == 2
        assert pools.client("cpu").submit(lambda: 6 * 7).result(timeout=60) == 42
    finally:
        pools.close()


def test_pools_come_from_the_registered_backend(tmp_path: Path, monkeypatch) -> None:
    """``start_pools`` asks the backend registered under ``execution.backend`` for its pools
    (any name, no branch on it); an unknown name is one line naming the known ones."""
    from l2lflow.execution import core

    monkeypatch.setitem(core.BACKENDS, "one-worker", "backends_for_tests:OneWorkerBackend")
    (tmp_path / "backends_for_tests.py").write_text(
        "from l2lflow.execution.local import start_local_cluster\n"
        "class OneWorkerBackend:\n"
        "    def pool_specs(self, execution):\n"
        "        return {'cpu': {'workers': 1}}\n"
        "    def start(self, name, spec, execution, *, local_directory=None):\n"
        "        return start_local_cluster(spec, local_directory=local_directory), 7\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    pools = start_pools({"backend": "one-worker"}, local_directory=str(tmp_path / "dask"))
    try:
        assert list(pools.clients) == ["cpu"] and pools.capacity == {"cpu": 7}
        assert pools.clients["cpu"].submit(sum, [1, 2], pure=False).result(timeout=120) == 3
    finally:
        pools.close()
    with pytest.raises(core.PoolError, match="'nowhere' is not a backend .known: local, one"):
        start_pools({"backend": "nowhere"})


def test_workers_do_not_profile_themselves_without_a_dashboard(tmp_path: Path) -> None:
    """Dask workers sample every thread's stack every 10 ms for the dashboard's profile pages;
    without a dashboard nobody reads them, and the sampling competes with the simulations. With
    or without one, the workers' event-loop checks and memory checks run once a second, not
    every 20 and 100 ms (each wake-up preempts a simulation on a machine whose cores all
    simulate)."""
    import dask

    def settings() -> tuple:
        return (
            bool(dask.config.get("distributed.worker.profile.enabled")),
            dask.config.get("distributed.admin.tick.interval"),
            dask.config.get("distributed.worker.memory.monitor-interval"),
        )

    for dashboard, profiling in ((False, False), (True, True)):
        execution = {"backend": "local", "workers": 1, "dashboard": dashboard}
        pools = start_pools(execution, local_directory=str(tmp_path))
        try:
            assert set(pools.client("cpu").run(settings).values()) == {(profiling, "1s", "1s")}
        finally:
            pools.close()
