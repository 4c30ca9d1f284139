"""Other local users: they can neither pose as the engine, nor talk to it, nor read the dashboard.

The squatting tests need a second user: as root they create a throw-away system user with
``useradd`` and run the fake engine as that user with ``setpriv``; without root they skip.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from helpers import run_snakemake, write_config

from l2lflow import client
from l2lflow.client import ClientError, socket_path

pytestmark = pytest.mark.resilience

STRANGER = "l2lflow-stranger"

#: a fake engine that answers every request "done", as another user would run it
FAKE_ENGINE = textwrap.dedent(
    """
    import os, socket, sys
    path = sys.argv[1]
    if not os.path.isdir(os.path.dirname(path)):
        os.makedirs(os.path.dirname(path))
        os.chmod(os.path.dirname(path), 0o777)  # as welcoming as a squatter makes it
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as srv:
        srv.bind(path)
        os.chmod(path, 0o777)
        srv.listen(16)
        print("listening", flush=True)
        while True:
            conn, _ = srv.accept()
            with conn:
                conn.makefile("r").readline()
                conn.sendall(b'{"type": "result", "ok": true, "result": {}}\\n')
    """
)


def stranger() -> pwd.struct_passwd:
    """A throw-away local user (created once per machine), or skip without root."""
    if os.geteuid() != 0:
        pytest.skip("needs root: creates a second local user (useradd) to squat the socket")
    try:
        return pwd.getpwnam(STRANGER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", STRANGER],
            capture_output=True,
        )
        return pwd.getpwnam(STRANGER)  # also if a parallel test created it meanwhile


def as_stranger(user: pwd.struct_passwd, *cmd: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [
            "setpriv",
            f"--reuid={user.pw_uid}",
            f"--regid={user.pw_gid}",
            "--clear-groups",
            *cmd,
        ],
        **kwargs,
    )


@pytest.fixture
def shared_tmp(monkeypatch):
    """A world-writable sticky folder standing in for /tmp (so that squatting it disturbs no
    other run on this machine), used as TMPDIR by this test and its subprocesses."""
    root = tempfile.mkdtemp(prefix="l2lflow-shared-tmp-", dir="/tmp")
    os.chmod(root, 0o1777)
    monkeypatch.setenv("TMPDIR", root)
    monkeypatch.setattr(tempfile, "tempdir", root)
    monkeypatch.delenv("L2LFLOW_RUNTIME_DIR", raising=False)
    yield Path(root)
    shutil.rmtree(root, ignore_errors=True)


def start_fake_engine(user: pwd.struct_passwd, path: str) -> subprocess.Popen:
    fake = as_stranger(
        user, sys.executable, "-I", "-c", FAKE_ENGINE, path, stdout=subprocess.PIPE, text=True
    )
    assert fake.stdout is not None
    assert fake.stdout.readline().strip() == "listening", "the fake engine did not start"
    return fake


def test_a_squatted_socket_folder_is_refused_by_the_run(tmp_path: Path, shared_tmp: Path) -> None:
    """Another user squats the engine's socket path (folder included) before the run starts and
    answers every step "done": the run must refuse it in one line and fail, not report success."""
    user = stranger()
    cfg = write_config(tmp_path, name="squat", generations=2)
    results = tmp_path / "results" / "squat"
    path = socket_path(results)
    if os.path.dirname(path) != str(shared_tmp):  # let the stranger create our folder first
        os.rmdir(os.path.dirname(path))
    fake = start_fake_engine(user, path)
    try:
        proc = run_snakemake(tmp_path, cfg, check=False)
    finally:
        fake.kill()
        fake.wait()
    out = proc.stdout + proc.stderr
    print(f"\nsquatted socket: snakemake exit {proc.returncode}")
    assert proc.returncode != 0, f"a fake engine of uid {user.pw_uid} ran the whole run:\n{out}"
    assert "refusing the engine socket folder" in out, out
    assert f"owned by uid {user.pw_uid}, not by you" in out, out
    assert not (results / "results.zarr").exists()


def test_the_client_refuses_an_engine_of_another_user(tmp_path: Path, shared_tmp: Path) -> None:
    """Even at the right path in our private folder, a server of another uid is not trusted
    (SO_PEERCRED): here root moves a stranger's listening socket into place."""
    user = stranger()
    results = tmp_path / "results"
    path = socket_path(results)
    elsewhere = str(shared_tmp / "stranger" / "engine.sock")
    fake = start_fake_engine(user, elsewhere)
    try:
        os.rename(elsewhere, path)
        with pytest.raises(ClientError, match=rf"served by uid {user.pw_uid} \(pid \d+\)"):
            client.request(results, "sample", config_path=tmp_path / "c.json", generation=0)
        assert client.engine_pid(results) is None
    finally:
        fake.kill()
        fake.wait()


def test_the_engine_refuses_a_client_of_another_user(tmp_path: Path, shared_tmp: Path) -> None:
    """A stranger who reaches the engine's socket anyway (here: a hard link root made for it,
    opened to everyone) gets no answer; this user still does."""
    user = stranger()
    results = tmp_path / "results"
    engine = subprocess.Popen(
        [sys.executable, "-m", "l2lflow.engine", str(results), "--idle-timeout", "60"]
    )
    try:
        path = socket_path(results)
        for _ in range(600):
            if client.engine_pid(results) == engine.pid:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the engine did not start")
        folder = Path(path).parent
        assert stat.S_IMODE(os.lstat(folder).st_mode) == 0o700
        assert os.lstat(folder).st_uid == os.getuid()
        assert stat.S_IMODE(os.lstat(path).st_mode) & 0o077 == 0  # the socket itself too
        link = shared_tmp / "link.sock"
        os.link(path, link)
        os.chmod(link, 0o777)
        ping = textwrap.dedent(
            """
            import socket, sys
            s = socket.socket(socket.AF_UNIX)
            s.connect(sys.argv[1])
            try:
                s.sendall(b'{"op": "ping"}\\n')
                print(repr(s.recv(4096)))
            except OSError as exc:  # closed on us before or while we sent
                print(f"refused ({exc.strerror})")
            """
        )
        probe = as_stranger(
            user, sys.executable, "-I", "-c", ping, str(link), stdout=subprocess.PIPE, text=True
        )
        answer, _ = probe.communicate(timeout=60)
        assert answer.strip() == "b''" or answer.startswith("refused"), answer
        assert client.request(results, "ping", start=False)["pid"] == engine.pid
    finally:
        client.request(results, "shutdown", start=False)
        engine.wait(timeout=60)


def test_a_socket_folder_open_to_others_is_refused(shared_tmp: Path) -> None:
    """Our own folder with group/other access (or a symlink in its place) is not used."""
    folder = shared_tmp / f"l2lflow-{os.getuid()}"
    folder.mkdir(mode=0o700)
    os.chmod(folder, 0o755)
    with pytest.raises(ClientError, match="its mode is 755; only its owner may enter it"):
        socket_path("/some/results")
    folder.rmdir()
    target = shared_tmp / "elsewhere"
    target.mkdir(mode=0o700)
    folder.symlink_to(target)
    with pytest.raises(ClientError, match="it is a symbolic link"):
        socket_path("/some/results")


# ---------------------------------------------------------------------------- the dashboard
def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_dashboard_is_off_by_default_and_local_when_asked(tmp_path: Path) -> None:
    """By default nothing shows worker logs, task keys or call stacks over HTTP; with
    ``execution.dashboard: true`` the dashboard serves on 127.0.0.1."""
    from l2lflow.execution import start_pools

    for setting, expect in ((None, 404), (True, 200)):
        execution = {"backend": "local", "workers": 1}
        if setting is not None:
            execution["dashboard"] = setting
        pools = start_pools(execution, local_directory=str(tmp_path))
        try:
            scheduler = pools.clusters["cpu"].scheduler
            host, port = "127.0.0.1", scheduler.http_server.port
            assert scheduler.http_server is not None
            for page in ("status", "info/main/workers.html"):
                assert _get(f"http://{host}:{port}/{page}") == expect, (setting, page)
            if setting:
                assert pools.clusters["cpu"].dashboard_link.startswith("http://127.0.0.1:")
        finally:
            pools.close()


def test_dashboard_setting_errors_are_one_line(tmp_path: Path) -> None:
    import yaml

    from l2lflow.config import ConfigError, validate_config

    base = yaml.safe_load(write_config(tmp_path).read_text())
    with pytest.raises(ConfigError, match=r"^execution.dashboard: '0.0.0.0:8787': .*127.0.0.1"):
        validate_config({**base, "execution": {"dashboard": "0.0.0.0:8787"}})
    with pytest.raises(ConfigError, match=r"^execution.dashboard: 'on' is not .* \(allowed: "):
        validate_config({**base, "execution": {"dashboard": "on"}})


def test_a_socket_folder_that_cannot_be_made_is_one_line(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("L2LFLOW_RUNTIME_DIR", str(tmp_path / "missing" / "run"))
    with pytest.raises(
        ClientError, match=r"^cannot create the engine socket folder .*No such file"
    ):
        socket_path("/some/results")
