"""``l2lflow export``: the evaluations of a run as one tidy table (CSV or Parquet).

One row per evaluation (see :meth:`l2lflow.accessor.L2LAccessor.to_dataframe`): generation,
individual, the parameters, fitness, status (0 pending, 1 done, 2 failed), seed, the extra
metrics and the provenance (runtime, attempts, worker, finished_at, error). Parquet keeps the
dtypes (and needs ``pyarrow``, a dependency of l2lflow); CSV is for everything else.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

FORMATS = ("csv", "parquet")


class ExportError(RuntimeError):
    """An export that cannot be done as asked (unknown format, missing pyarrow)."""


def _results_dir(results: str | Path) -> Path:
    from l2lflow.store import STORE_NAME

    path = Path(results)
    return path.parent if path.name == STORE_NAME else path


def default_path(results: str | Path, fmt: str) -> Path:
    """``results/<name>/results.csv`` (or ``.parquet``): next to the store."""
    return _results_dir(results) / f"results.{fmt}"


def dataframe(results: Any, *, provenance: bool = True, include_pending: bool = True):
    """The tidy table of a results folder, store or Dataset."""
    import xarray as xr

    import l2lflow.accessor  # noqa: F401  (ds.l2l)

    if isinstance(results, xr.Dataset):
        ds = results
    else:
        from l2lflow.store import open_results

        ds = open_results(results)
    return ds.l2l.to_dataframe(provenance=provenance, include_pending=include_pending)


def export(
    results: Any,
    fmt: str = "csv",
    out: str | Path | None = None,
    *,
    provenance: bool = True,
    include_pending: bool = True,
) -> Path | None:
    """Write the table as ``fmt`` to ``out`` (default: next to the store; ``"-"``: stdout, CSV
    only). Returns the path written (None for stdout)."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r} (known: {', '.join(FORMATS)})")
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ExportError(
                "--format parquet needs pyarrow: python -m pip install pyarrow "
                "(or use --format csv)"
            ) from None
    if out is None and isinstance(results, str | Path):
        out = default_path(results, fmt)
    if out is None:
        raise ExportError("say where to write the table (out=...)")
    frame = dataframe(results, provenance=provenance, include_pending=include_pending)
    if str(out) == "-":
        if fmt != "csv":
            raise ExportError("only CSV can be written to stdout; give a file for parquet")
        try:
            frame.to_csv(sys.stdout, index=False)
            sys.stdout.flush()
        except BrokenPipeError:  # `l2lflow export ... --out - | head`
            import os

            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return None
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    if fmt == "csv":
        frame.to_csv(tmp, index=False)
    else:
        frame.to_parquet(tmp, index=False)
    tmp.replace(out)
    return out
