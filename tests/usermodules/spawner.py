"""A user optimizee that leaves processes behind, as careless simulation scripts do.

Each evaluation starts a child (``subprocess``), a forked grandchild whose parent exits (so it
is orphaned at once) and a ``setsid`` daemon (a session of its own), all sleeping for ten
minutes; each writes its pid into ``pid_dir`` so that a test can look for survivors.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

SLEEPER = "import time; time.sleep(600)  # l2lflow-orphan-probe"


def _note(pid_dir: str, kind: str, pid: int) -> None:
    with open(os.path.join(pid_dir, f"{kind}-{pid}"), "w"):
        pass


def spawn(params: dict[str, Any], seed: int, *, pid_dir: str, hang_s: float = 0.0) -> float:
    child = subprocess.Popen([sys.executable, "-c", SLEEPER])
    _note(pid_dir, "child", child.pid)
    daemon = subprocess.Popen([sys.executable, "-c", SLEEPER], start_new_session=True)
    _note(pid_dir, "setsid", daemon.pid)
    middle = os.fork()
    if middle == 0:  # the forked child starts a grandchild and exits: the grandchild is orphaned
        grandchild = os.fork()
        if grandchild == 0:
            os.execv(sys.executable, [sys.executable, "-c", SLEEPER])
        _note(pid_dir, "grandchild", grandchild)
        os._exit(0)
    os.waitpid(middle, 0)
    if hang_s:
        time.sleep(hang_s)
    return float(sum(float(v) ** 2 for v in params.values()))
