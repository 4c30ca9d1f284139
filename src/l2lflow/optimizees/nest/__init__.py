"""NEST optimizees, and the kernel helpers a user's own NEST model should use.

Importing this package registers ``nest.brunel``, ``nest.reservoir`` and ``nest.eprop`` but does *not* import
NEST itself (0.6 s, 130 MB): that happens on the first evaluation, in the worker process.

A user's ``mymodule:function`` optimizee gets a clean, seeded kernel and Dask-friendly runs with::

    from l2lflow.optimizees.nest import nest_session, simulate

    def my_model(params, seed, *, context):
        with nest_session(seed, context.threads, log=context.log) as nest:
            ...  # nest.Create / nest.Connect
            simulate(1000.0)  # chunked, so the worker keeps heartbeating
        return {...}

See ``config/examples/user_nest_model.py``.
"""

from l2lflow.optimizees.nest import brunel, eprop, reservoir
from l2lflow.optimizees.nest.kernel import (
    capture_nest_messages,
    chunk_plan,
    get_nest,
    nest_available,
    nest_seed,
    nest_session,
    reset_kernel,
    simulate,
)

__all__ = [
    "brunel",
    "capture_nest_messages",
    "chunk_plan",
    "eprop",
    "get_nest",
    "nest_available",
    "nest_seed",
    "nest_session",
    "reservoir",
    "reset_kernel",
    "simulate",
]
