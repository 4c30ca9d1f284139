"""Real Slurm worker pools on the local test cluster (``.ci/slurm/start.sh``; ``-m slurm``).

Each test submits real jobs through dask-jobqueue and checks what the engine relies on: TLS
workers that connect within seconds, a scheduler that refuses strangers, jobs that disappear
with the cluster (also when the engine is SIGKILLed), GPU workers pinned to their GPU, and
multi-worker jobs that adaptive scaling replaces after their ``--lifetime``.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import dask
import pytest
from distributed import Client
from distributed.security import Security

from l2lflow.execution.slurm import slurm_cluster

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(120)]


@pytest.fixture
def pool(local_slurm: dict[str, str], tmp_path: Path) -> dict:
    """A one-core CPU pool on the test cluster; worker logs and TLS files under tmp_path."""
    return {
        "partition": "batch",
        "account": "ci",
        "cores": 1,
        "memory": "1GB",
        "walltime": "00:05:00",
        "interface": "lo",
        "death_timeout": 10,
        "log_directory": str(tmp_path / "logs"),
        "shared_temp_directory": str(tmp_path / "tls"),
    }


def squeue(job_ids: list[str]) -> dict[str, str]:
    """State of those jobs that squeue still lists."""
    out = subprocess.run(
        ["squeue", "-h", "-o", "%A %T", "-j", ",".join(job_ids)],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return dict(line.split() for line in out.splitlines() if line.strip())


def wait_until(predicate, timeout: float, step: float = 0.25) -> float:
    """Seconds until ``predicate()`` held; fails after ``timeout``."""
    t0 = time.monotonic()
    while not predicate():
        if time.monotonic() - t0 > timeout:
            pytest.fail(f"condition not met within {timeout} s")
        time.sleep(step)
    return time.monotonic() - t0


def tls_refused(address: str, ca_file: Path, cert: Path | None = None) -> bool:
    """Speak TLS to the scheduler, trusting its CA, with or without a client certificate.

    (A distributed ``Client`` cannot even try without one: it fails before connecting.) With TLS
    1.3 the server's refusal arrives on the first read; an accepted connection just waits for a
    Dask message, so the read times out.
    """
    host, port = address.removeprefix("tls://").rsplit(":", 1)
    ctx = ssl.create_default_context(cafile=str(ca_file))
    ctx.check_hostname = False
    if cert is not None:
        ctx.load_cert_chain(cert)
    with socket.create_connection((host, int(port)), timeout=2) as raw:
        try:
            with ctx.wrap_socket(raw) as tls:
                return tls.recv(1) == b""
        except TimeoutError:
            return False
        except (ssl.SSLError, ConnectionError):
            return True


def job_ids(client: Client) -> list[str]:
    return sorted(set(client.run(lambda: os.environ["SLURM_JOB_ID"]).values()))


def test_tls_pool_scales_runs_refuses_strangers_and_cleans_up(pool: dict, tmp_path: Path) -> None:
    cluster = slurm_cluster(pool, name="cpu", security=Security.temporary(), adaptive=False)
    try:
        assert cluster.scheduler_address.startswith("tls://")
        # no dashboard and no /info pages (worker logs, call stacks) by default: health only
        http = cluster.scheduler.http_server
        for page in ("status", "info/main/workers.html"):
            with pytest.raises(urllib.error.HTTPError, match="404"):
                urllib.request.urlopen(f"http://{http.address}:{http.port}/{page}", timeout=10)
        client = Client(cluster)
        t0 = time.monotonic()
        cluster.scale(2)
        client.wait_for_workers(2, timeout=60)
        print(f"\nscale(2) -> 2 TLS workers connected: {time.monotonic() - t0:.2f} s")
        workers = client.scheduler_info()["workers"]
        assert all(addr.startswith("tls://") for addr in workers)
        assert all(w["nthreads"] == 1 and not w["resources"] for w in workers.values())
        assert client.submit(lambda x: x + 1, 41).result(timeout=30) == 42

        jobs = job_ids(client)
        assert len(jobs) == 2
        assert set(squeue(jobs).values()) == {"RUNNING"}

        def in_sacct() -> bool:
            out = subprocess.run(
                ["sacct", "-n", "-X", "-P", "-o", "JobID,Partition", "-j", ",".join(jobs)],
                capture_output=True,
                text=True,
            ).stdout
            return sorted(line.split("|")[0] for line in out.splitlines()) == jobs

        wait_until(in_sacct, timeout=15)

        # the credential files are private and exist only while the cluster does
        (cred_dir,) = (tmp_path / "tls").iterdir()
        assert cred_dir.stat().st_mode & 0o777 == 0o700
        assert all(f.stat().st_mode & 0o777 == 0o600 for f in cred_dir.iterdir())

        # strangers: plain TCP, TLS without a client certificate, TLS with another certificate
        plain = cluster.scheduler_address.replace("tls://", "tcp://")
        with pytest.raises((OSError, TimeoutError)):
            Client(plain, timeout=3)
        ca_file = next(cred_dir.glob(".dask-jobqueue.worker.ca_file.*"))
        assert tls_refused(cluster.scheduler_address, ca_file)
        # control: the same probe with the workers' certificate (key in the same PEM) gets in
        pem = tmp_path / "worker.pem"
        pem.write_text(
            next(cred_dir.glob(".dask-jobqueue.worker.cert.*")).read_text()
            + next(cred_dir.glob(".dask-jobqueue.worker.key.*")).read_text()
        )
        assert not tls_refused(cluster.scheduler_address, ca_file, cert=pem)
        with pytest.raises((OSError, TimeoutError)):
            Client(cluster.scheduler_address, security=Security.temporary(), timeout=3)
        client.close()
    finally:
        cluster.close()
    elapsed = wait_until(lambda: not squeue(jobs), timeout=10)
    print(f"jobs gone from squeue {elapsed:.2f} s after close()")
    assert not any((tmp_path / "tls").iterdir())


def test_gpu_pool_worker_is_pinned_and_advertises_one_gpu(pool: dict) -> None:
    gpu = dict(pool, partition="gpus", gpus_per_job=1, job_extra_directives=["--gres=gpu:1"])
    with slurm_cluster(gpu, name="gpu", security=True, adaptive=False) as cluster:
        with Client(cluster) as client:
            cluster.scale(1)
            client.wait_for_workers(1, timeout=60)
            (worker,) = client.scheduler_info()["workers"].values()
            assert worker["resources"] == {"GPU": 1} and worker["nthreads"] == 1

            def where() -> tuple[str | None, str | None]:
                return os.environ.get("CUDA_VISIBLE_DEVICES"), os.environ.get("SLURM_JOB_PARTITION")

            visible, partition = client.submit(where, resources={"GPU": 1}).result(timeout=30)
    assert partition == "gpus"
    assert visible == "0"  # the one GPU of the job (gres gpu:1 -> Slurm sets 0)


def test_two_pinned_workers_share_one_job(pool: dict) -> None:
    """A 2-GPU job on a 1-GPU test node: request no gres, the launcher falls back to 0,1."""
    gpu = dict(pool, cores=2, gpus_per_job=2, job_extra_directives=["--gres=gpu:0"])
    with slurm_cluster(gpu, name="gpu2", security=True, adaptive=False) as cluster:
        with Client(cluster) as client:
            cluster.scale(2)
            client.wait_for_workers(2, timeout=60)
            seen = client.run(
                lambda: (os.environ["SLURM_JOB_ID"], os.environ.get("CUDA_VISIBLE_DEVICES"))
            )
    assert len({job for job, _ in seen.values()}) == 1
    assert sorted(gpu for _, gpu in seen.values()) == ["0", "1"]


def test_multiworker_jobs_are_replaced_after_their_lifetime(pool: dict) -> None:
    """dask/distributed#9102: without l2lflow's fix, adaptive never replaces such a job."""
    short = dict(
        pool,
        cores=2,
        processes=2,
        lifetime="6s",
        lifetime_stagger="1s",
        min_jobs=1,
        max_jobs=1,
    )
    with dask.config.set({"distributed.deploy.lost-worker-timeout": "1s"}):
        with slurm_cluster(short, name="life", security=True) as cluster:
            with Client(cluster) as client:
                client.wait_for_workers(2, timeout=60)
                first_jobs, first = job_ids(client), set(client.scheduler_info()["workers"])

                def replaced() -> bool:
                    now = set(client.scheduler_info()["workers"])
                    return len(now) == 2 and not now & first

                elapsed = wait_until(replaced, timeout=45, step=0.5)
                print(f"\nthe 2-worker job was replaced {elapsed:.1f} s after it started")
                assert job_ids(client) != first_jobs


CHILD = """
import os, sys, time
from distributed import Client
from l2lflow.execution.slurm import slurm_cluster
pool = eval(sys.argv[1])
cluster = slurm_cluster(pool, name="orphan", security=True, adaptive=False)
client = Client(cluster)
cluster.scale(1)
client.wait_for_workers(1, timeout=60)
print("READY", *client.run(lambda: os.environ["SLURM_JOB_ID"]).values(), flush=True)
time.sleep(600)
"""


def test_sigkilled_engine_leaves_no_job_behind(pool: dict) -> None:
    """The scheduler dies with the engine process; its workers notice and their jobs end."""
    orphan = dict(pool, idle_timeout=20)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(CHILD), repr(orphan)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = child.stdout.readline()
        assert line.startswith("READY"), line
        jobs = line.split()[1:]
        assert set(squeue(jobs).values()) == {"RUNNING"}
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        elapsed = wait_until(lambda: not squeue(jobs), timeout=orphan["idle_timeout"] + 10)
        print(f"\njobs gone from squeue {elapsed:.2f} s after SIGKILL of the engine")
    finally:
        if child.poll() is None:
            child.kill()
