"""The TLS credential folder of one Slurm pool: a fresh owner-only folder per cluster, on a file
system the compute nodes see, removed when the cluster closes; folders of engines that died
(SIGKILL cannot clean up) are removed when the next cluster starts on that host.

dask-jobqueue writes the in-memory throw-away credentials of ``Security.temporary()`` to
``.dask-jobqueue.worker.*`` files (mode 0600) in its ``shared_temp_directory`` and passes their
paths in the job script: the workers read them there.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import tempfile
from pathlib import Path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def credential_dir(base: str, name: str) -> str:
    """A fresh owner-only folder ``<base>/<host>-<pid>-<name>-<random>`` for one cluster's TLS files.

    Folders left by processes of this host that no longer run (an engine killed with SIGKILL
    cannot clean up) are removed first.
    """
    root = Path(base).expanduser().absolute()
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    root.chmod(0o700)
    host = socket.gethostname()
    for d in root.iterdir():
        m = re.fullmatch(rf"{re.escape(host)}-(\d+)-.*", d.name)
        if m and d.is_dir() and not _pid_alive(int(m.group(1))):
            shutil.rmtree(d, ignore_errors=True)
    safe = re.sub(r"[^A-Za-z0-9_.]", "_", name)
    return tempfile.mkdtemp(prefix=f"{host}-{os.getpid()}-{safe}-", dir=root)  # mode 0700
