"""The results store: one Zarr v3 store per experiment, readable with plain ``xr.open_zarr``.

Layout (root group, every array with ``dimension_names`` so xarray finds its dims)::

    generation (generation)                      coordinate, grows by one per sampled generation
    individual (individual)                      coordinate, 0 .. population_size-1
    <parameter> (generation, individual)         one per parameter of the space
    <expression> (generation, individual, <expression>_gene)  integer CGP genome of an
    <expression>_formula (generation, individual)              expression parameter, its formula
    fitness, status, seed (generation, individual)
    metric_<name> (generation, individual)       extra scalar metrics an optimizee returns
    <array> (generation, individual, ...)        arrays an optimizee returns (traces, per-task scores)
    runtime, attempts, worker, error, log        provenance: how the evaluation went
    optimizer/state (generation)                 JSON checkpoint after each generation's tell

Every chunk holds one generation of one variable, and only the engine writes (workers return
results to it), so no two writers ever share a chunk (zarr 3 has no locks) and a generation costs
one file per variable. Every chunk is written, even one that holds only fill values, so a chunk
file missing inside the committed shape is damage that ``l2lflow check`` names.

Crash safety (a SIGKILL may land between any two file writes):

* zarr-python (>= 3.1.3) writes each file atomically (temporary file + ``os.replace``), so no
  file is ever half-written; a change that spans several files is made safe by its order.
* The store is created in a temporary folder beside it and renamed into place: it either does
  not exist yet or is complete. A leftover temporary folder is ignored and removed later.
* **The commit marker of the store's shape is the consolidated metadata in the root
  ``zarr.json``**, written last, in one file. A new generation (or a new variable) first grows
  and fills every array, then rewrites that snapshot. Readers (status, ``open_results``/xarray,
  the optimizer's steps) see the shapes of the snapshot, so a half-grown generation is not there
  for them; ``check`` notes it, and the next writer shrinks it away and samples it again.
* Within a committed generation, ``status`` is the marker of each individual: it is written
  after the individual's other values, so ``done`` implies they are on disk. The optimizer
  checkpoint (``optimizer/state``, one chunk per generation) marks an aggregated generation, and
  ``meta_test_status`` the meta-test's rows.

Nothing in the store is ever unpickled or evaluated: metadata and optimizer checkpoints are JSON.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import time
import uuid
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from l2lflow.failpoints import reach

if TYPE_CHECKING:
    from l2lflow.execution.work import StoredResult

FORMAT_VERSION = 1
STORE_NAME = "results.zarr"

PENDING, DONE, FAILED = 0, 1, 2
STATUS_MEANINGS = "pending done failed"

#: deterministic variables: equal bitwise across reruns, worker counts and interruptions
RESULT_VARIABLES = ("fitness", "status", "seed")
#: provenance: depends on the machine and the run (timings, worker ids)
PROVENANCE_VARIABLES = ("runtime", "attempts", "worker", "error", "log", "finished_at")

_DIMS = ["generation", "individual"]
#: a store being created is built in ``<results>/<CREATING_PREFIX><pid>-<random>`` and then
#: renamed to ``results.zarr``; such a folder left by a killed creator is ignored (and removed by
#: the next creation)
CREATING_PREFIX = ".results.zarr.creating-"
#: the writer's arrays put every chunk on disk, also one holding only fill values, so that a
#: missing chunk file is always damage (zarr skips such chunks by default)
_WRITE_EVERY_CHUNK = {"write_empty_chunks": True}


class StoreError(RuntimeError):
    """A results store that cannot be used as asked (missing, damaged, another experiment)."""


def store_path(results_dir: str | Path) -> Path:
    return Path(results_dir) / STORE_NAME


def _quiet_consolidate(path: Path) -> None:
    import zarr

    with warnings.catch_warnings():
        # zarr warns that consolidated metadata is not (yet) in the v3 spec; xarray relies on it
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(str(path))


def _snapshot(store: Path) -> dict[str, Any] | None:
    """The committed shape of the store folder ``store``: node path -> metadata (JSON) from the
    consolidated metadata of its root ``zarr.json``; None if it has none."""
    try:
        doc = json.loads((store / "zarr.json").read_text())
    except (OSError, ValueError):
        return None
    consolidated = doc.get("consolidated_metadata") if isinstance(doc, dict) else None
    nodes = consolidated.get("metadata") if isinstance(consolidated, dict) else None
    return nodes if isinstance(nodes, dict) else None


def committed_generations(store: Path) -> int | None:
    """Generations committed to the store folder ``store`` (its snapshot's ``generation``
    coordinate), or None if it has no snapshot (see the module docstring)."""
    node = (_snapshot(store) or {}).get("generation")
    try:
        return int(node["shape"][0])
    except (TypeError, KeyError, IndexError, ValueError):
        return None


def _write_root_attrs(store: Path, attrs: dict[str, Any]) -> None:
    """Replace the root's l2lflow attributes in one write that keeps the committed snapshot
    (a root group opened without it would drop it from ``zarr.json``)."""
    import zarr

    root = zarr.open_group(str(store), mode="r+", zarr_format=3)
    root.attrs["l2lflow"] = attrs


def _remove_abandoned(results_dir: Path) -> None:
    """Remove the temporary folders of store creations whose process is gone (killed)."""
    for folder in results_dir.glob(f"{CREATING_PREFIX}*"):
        pid = folder.name[len(CREATING_PREFIX) :].split("-")[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(folder, ignore_errors=True)


def read_store_attrs(results_dir: str | Path) -> dict[str, Any] | None:
    """The store's l2lflow attributes read as plain JSON (no zarr import), or None if no store."""
    return _read_attrs(store_path(results_dir))


def _read_attrs(store: Path) -> dict[str, Any] | None:
    """The l2lflow attributes of the Zarr store folder ``store`` (see read_store_attrs)."""
    meta = store / "zarr.json"
    if not meta.exists():
        return None
    try:
        doc = json.loads(meta.read_text())
    except (OSError, ValueError) as exc:
        raise StoreError(f"{meta}: unreadable store metadata, expected JSON ({exc})") from None
    attrs = doc.get("attributes", {}).get("l2lflow") if isinstance(doc, dict) else None
    if not isinstance(attrs, dict):
        raise StoreError(f"{store}: a Zarr store, but not an l2lflow results store")
    version = attrs.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        # refuse before reading anything else: a newer layout may mean something else
        raise StoreError(
            f"{store}: store format version {version!r} is newer than this "
            f"l2lflow understands ({FORMAT_VERSION}); upgrade l2lflow"
        )
    return attrs


def check_compatible(results_dir: str | Path, config: dict[str, Any]) -> None:
    """Refuse a config that would change the results of an existing store, saying what changed."""
    from l2lflow.config import config_hash, describe_changes, result_config

    attrs = read_store_attrs(results_dir)
    if attrs is None:
        return
    version = attrs.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise StoreError(
            f"{store_path(results_dir)}: store format version {version!r} is newer than this "
            f"l2lflow understands ({FORMAT_VERSION}); upgrade l2lflow"
        )
    if attrs.get("config_hash") != config_hash(config):
        changes = describe_changes(attrs.get("result_config", {}), result_config(config))
        detail = "; ".join(changes) if changes else "result settings differ"
        raise StoreError(
            f"{store_path(results_dir)} holds results of another configuration ({detail}). "
            "Restore those settings, or set another 'name'/'results' for a new experiment."
        )


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for pkg in (
        "l2lflow",
        "numpy",
        "zarr",
        "xarray",
        "dask",
        "distributed",
        "cma",
        "nest-simulator",
    ):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return out


class ResultStore:
    """Read/write access to one experiment's store. Only the engine (one process) writes."""

    def __init__(self, results_dir: str | Path, *, mode: str = "r") -> None:
        import zarr

        self.results_dir = Path(results_dir)
        self.path = store_path(results_dir)
        if mode not in ("r", "r+"):
            raise ValueError("mode must be 'r' or 'r+'")
        if self.path.exists() and not self.path.is_dir():
            raise StoreError(f"{self.path}: is a file, expected a Zarr store folder")
        attrs = read_store_attrs(results_dir)
        if attrs is None:
            raise StoreError(f"{self.path}: no results store here")
        try:
            # every node as it is on disk, committed or not (the writer grows these)
            raw = zarr.open_group(str(self.path), mode=mode, zarr_format=3, use_consolidated=False)
        except Exception as exc:
            raise StoreError(f"{self.path}: cannot open the Zarr store ({exc})") from None
        try:
            # every variable's metadata must parse (the writer lists them when it grows the
            # store): refuse a store with an unreadable or foreign one now, before any work
            list(raw.array_keys())
        except Exception:  # noqa: BLE001 - named below
            raise StoreError(
                f"{self.path}: variable {_unreadable_variable(self.path)} cannot be read; "
                f"`l2lflow check {self.results_dir}` lists the damage"
            ) from None
        snapshot = _snapshot(self.path)
        self.root = raw
        if mode == "r" and snapshot is not None:
            # a reader sees the committed shapes only: a generation a writer is growing (or
            # was killed growing) is not there yet (see the module docstring)
            self.root = zarr.open_group(
                str(self.path), mode="r", zarr_format=3, use_consolidated=True
            )
        self.attrs = attrs
        self.mode = mode
        self._arrays: dict[str, Any] = {}
        self._n_aggregated: int | None = None
        self._generations: int | None = None
        #: names of the store's variables (listing them reads every one's metadata: once)
        self._names: set[str] | None = None
        #: name -> (generation, row) last written by this writer: the engine is the store's
        #: only writer, so a batch of results needs no read of the row it is about to write
        self._rows: dict[str, tuple[int, np.ndarray]] = {}
        #: the result shapes derived from the variables of a store that does not record them
        self._derived_shapes: dict[str, tuple[int, ...]] | None = None
        #: (name, array) of the variables on the generation dimension (see _generation_arrays)
        self._by_generation: list[tuple[str, Any]] | None = None
        if mode == "r+":
            committed = committed_generations(self.path)
            self._generations = (
                int(self.array("generation").shape[0]) if committed is None else committed
            )
            self._shrink_uncommitted()

    # ------------------------------------------------------------------ creation
    @classmethod
    def create(cls, results_dir: str | Path, config: dict[str, Any]) -> ResultStore:
        """Create an empty store for ``config`` (refuses to overwrite anything)."""
        import zarr

        from l2lflow.config import config_hash, result_config
        from l2lflow.space import ParameterSpace

        path = store_path(results_dir)
        if path.exists():
            raise StoreError(f"{path}: already exists")
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_abandoned(path.parent)
        space = ParameterSpace.from_config(config["space"])
        pop = int(config["population_size"])
        # built aside and renamed into place: a kill leaves no store or a complete one
        tmp = path.parent / f"{CREATING_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        root = zarr.open_group(str(tmp), mode="w-", zarr_format=3)
        root.attrs["l2lflow"] = {
            "format_version": FORMAT_VERSION,
            "name": config["name"],
            "config": config,
            "config_hash": config_hash(config),
            "result_config": result_config(config),
            "parameters": space.names,
            "population_size": pop,
            "direction": config["direction"],
            "versions": _versions(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            # every chunk of the committed shape is a file: `l2lflow check` counts a missing one
            "every_chunk_written": True,
        }
        reach("create.folder")
        gen = root.create_array(
            "generation",
            shape=(0,),
            chunks=(4096,),
            dtype="int64",
            dimension_names=["generation"],
            config=_WRITE_EVERY_CHUNK,
        )
        gen.attrs["long_name"] = "generation of the outer loop"
        ind = root.create_array(
            "individual",
            shape=(pop,),
            chunks=(pop,),
            dtype="int64",
            dimension_names=["individual"],
            config=_WRITE_EVERY_CHUNK,
        )
        ind[:] = np.arange(pop)
        ind.attrs["long_name"] = "individual within its generation"
        spec = {p.name: (p.dtype, _fill(p.dtype)) for p in space.parameters if p.expression is None}
        spec["fitness"] = ("float64", np.nan)
        spec["status"] = ("int8", PENDING)
        spec["seed"] = ("int64", 0)
        spec["runtime"] = ("float64", np.nan)
        spec["attempts"] = ("int16", 0)
        spec["finished_at"] = ("float64", np.nan)
        spec["worker"] = (str, "")
        spec["error"] = (str, "")
        spec["log"] = (str, "")
        for name, (dtype, fill) in spec.items():
            arr = root.create_array(
                name,
                shape=(0, pop),
                chunks=(1, pop),
                dtype=dtype,
                fill_value=fill,
                dimension_names=_DIMS,
                config=_WRITE_EVERY_CHUNK,
            )
            if name == "status":
                arr.attrs.update(
                    {"flag_values": [PENDING, DONE, FAILED], "flag_meanings": STATUS_MEANINGS}
                )
            elif name in space.names:
                p = next(p for p in space.parameters if p.name == name)
                arr.attrs.update({"l2l_role": "parameter", "l2l_kind": p.kind})
            reach("create.array")
        _create_expression_arrays(root, space, pop)
        opt = root.create_group("optimizer")
        opt.create_array(
            "state",
            shape=(0,),
            chunks=(1,),
            dtype=str,
            fill_value="",
            dimension_names=["generation"],
            config=_WRITE_EVERY_CHUNK,
        )
        _quiet_consolidate(tmp)
        reach("create.commit")
        try:
            os.rename(tmp, path)  # atomic; replaces nothing but an empty folder
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if path.exists():
                raise StoreError(f"{path}: already exists") from None
            raise
        reach("create.committed")
        return cls(results_dir, mode="r+")

    @classmethod
    def open_or_create(cls, results_dir: str | Path, config: dict[str, Any]) -> ResultStore:
        """Open the store for writing, creating it if absent; refuses another experiment's store."""
        path = store_path(results_dir)
        if path.exists() and not path.is_dir():
            raise StoreError(f"{path}: is a file, expected a Zarr store folder")
        if read_store_attrs(results_dir) is None:
            if path.exists() and any(path.iterdir()):
                raise StoreError(f"{path}: exists but is not an l2lflow results store")
            if path.exists():
                path.rmdir()
            return cls.create(results_dir, config)
        check_compatible(results_dir, config)
        store = cls(results_dir, mode="r+")
        if store.attrs.get("config") != config:
            # allowed changes only (generations, execution, evaluation policy): record them
            store.attrs = {**store.attrs, "config": config}
            _write_root_attrs(store.path, store.attrs)
        return store

    # ------------------------------------------------------------------ reading
    def array(self, name: str) -> Any:
        if name not in self._arrays:
            try:
                arr = self.root[name]
            except KeyError:
                raise StoreError(f"{self.path}: variable {name!r} is missing") from None
            self._arrays[name] = arr.with_config(_WRITE_EVERY_CHUNK) if self.mode == "r+" else arr
        return self._arrays[name]

    def _generation_arrays(self) -> list[tuple[str, Any]]:
        """(name, array) of every variable on the ``generation`` dimension, coordinate last.

        Listed once per store object (a listing reads every variable's metadata): variables are
        created only by this writer, which then forgets the list (``_variable_changed``)."""
        if self._by_generation is None:
            out = []
            for name in [*sorted(self.root.array_keys()), "optimizer/state"]:
                arr = self.array(name)
                dims = arr.metadata.dimension_names
                if dims and dims[0] == "generation":
                    out.append((name, arr))
            self._by_generation = sorted(out, key=lambda item: item[0] == "generation")
        return self._by_generation

    def _variable_changed(self, name: str, arr: Any) -> Any:
        """Note a variable this writer has just created (``arr``) or deleted (``arr`` None)."""
        self._by_generation = None
        if arr is None:
            self._arrays.pop(name, None)
            if self._names is not None:
                self._names.discard(name)
        else:
            self._arrays[name] = arr
            if self._names is not None:
                self._names.add(name)
        return arr

    def _shrink_uncommitted(self) -> None:
        """Drop the rows that a writer killed before its commit grew beyond the committed
        generations: the step that grew them runs again and writes them anew."""
        for _, arr in self._generation_arrays():
            if arr.shape[0] > self.n_generations:
                arr.resize((self.n_generations, *arr.shape[1:]))

    def has(self, name: str) -> bool:
        if name in self._arrays:
            return True
        if self._names is None:
            self._names = set(self.root.array_keys())
        return name in self._names

    @property
    def config(self) -> dict[str, Any]:
        return self.attrs["config"]

    @property
    def population_size(self) -> int:
        return int(self.attrs["population_size"])

    @property
    def parameter_names(self) -> list[str]:
        return list(self.attrs["parameters"])

    @property
    def n_generations(self) -> int:
        """How many generations have been sampled (committed rows of the store)."""
        if self._generations is not None:
            return self._generations
        return int(self.array("generation").shape[0])

    def status(self, generation: int) -> np.ndarray:
        return np.asarray(self.array("status")[generation, :])

    def fitness(self, generation: int) -> np.ndarray:
        return np.asarray(self.array("fitness")[generation, :])

    def parameters(self, generation: int) -> dict[str, np.ndarray]:
        """The sampled parameters of ``generation``; refuses a generation with a lost chunk."""
        params = {n: np.asarray(self.array(n)[generation, :]) for n in self.parameter_names}
        for name, column in params.items():
            # a sampled value is never NaN: NaN is the fill value of a chunk that is gone
            if column.dtype.kind == "f" and not np.all(np.isfinite(column)):
                raise StoreError(
                    f"{self.path}: parameter {name!r} of generation {generation} is "
                    "missing (a chunk was deleted); `l2lflow check "
                    f"{self.results_dir}` lists the damage"
                )
        return params

    def seeds(self, generation: int) -> np.ndarray:
        return np.asarray(self.array("seed")[generation, :])

    def checkpoint(self, generation: int) -> dict[str, Any] | None:
        """The optimizer state saved after ``generation``'s tell ({} means: restore by replay)."""
        states = self.array("optimizer/state")
        if generation >= states.shape[0]:
            return None
        text = states[generation]
        text = text.item() if hasattr(text, "item") else text
        if not text:
            return None
        try:
            return json.loads(text)
        except ValueError as exc:
            raise StoreError(
                f"{self.path}: optimizer checkpoint {generation} is damaged ({exc})"
            ) from None

    def n_aggregated(self) -> int:
        """Generations whose optimizer checkpoint is written (fully finished generations)."""
        if self._n_aggregated is None:
            self._n_aggregated = self._count_aggregated()
        return self._n_aggregated

    def _count_aggregated(self) -> int:
        states = self.array("optimizer/state")
        n = int(states.shape[0])
        while n > 0:
            text = states[n - 1]
            text = text.item() if hasattr(text, "item") else text
            if text:
                break
            n -= 1
        return n

    # ------------------------------------------------------------------ writing
    def append_generation(
        self, generation: int, values: dict[str, np.ndarray], seeds: np.ndarray
    ) -> None:
        """Add generation ``generation`` with its parameters and seeds; status pending.

        Every (generation, ...) array grows by a row that is written at once (parameters, seeds,
        fill values elsewhere; the coordinate last); then the snapshot in the root ``zarr.json``
        commits the generation (see the module docstring). Before that commit a kill leaves the
        generation not there for readers, and the next writer shrinks it away.
        """
        n = self.n_generations
        if generation != n:
            raise StoreError(f"cannot add generation {generation}: the store has {n} generations")
        self._rows.clear()  # a row written before is that of another (or an abandoned) generation
        pop = self.population_size
        rows: dict[str, Any] = {
            name: np.asarray(col).reshape(pop, *self.array(name).shape[2:])  # expression genomes
            for name, col in values.items()
        }
        rows["seed"] = np.asarray(seeds, dtype=np.int64)
        rows["generation"] = generation

        def grow(item: tuple[str, Any]) -> None:
            name, arr = item
            if arr.shape[0] != n + 1:  # not already grown by this writer's failed attempt
                arr.resize((n + 1, *arr.shape[1:]))
            value = rows.get(name, arr.fill_value)
            arr[generation, ...] = value
            if arr.ndim >= 2 and name not in rows:
                # this writer's copy of the row (see _write_cells): the first batch of results
                # then writes without reading the row it just wrote
                self._rows[name] = (generation, _filled_row(arr, value))
            reach("sample.grow", generation)

        *variables, coordinate = self._generation_arrays()
        # one variable after another, each write is a round trip through Zarr's event loop and
        # a file: side by side they take a fraction of the time (a ~25-variable store: 40 ms
        # of each generation's sample step)
        list(_store_threads().map(grow, variables))
        grow(coordinate)  # the coordinate last
        reach("sample.commit", generation)
        _quiet_consolidate(self.path)
        self._generations = n + 1
        reach("sample.committed", generation)

    def write_results(self, generation: int, results: Iterable[StoredResult]) -> None:
        """Write finished evaluations of one generation (a batch), status last.

        Each result dict has ``individual``, ``status`` (DONE/FAILED), ``fitness``, ``metrics``
        (name -> float), ``arrays`` (name -> ndarray), ``runtime``, ``attempts``, ``worker``,
        ``error``, ``log``.
        """
        results = list(results)
        if not results:
            return
        idx = np.array([r["individual"] for r in results], dtype=np.int64)
        created = False
        columns: dict[str, list[Any]] = {
            "fitness": [r["fitness"] for r in results],
            "runtime": [r.get("runtime", np.nan) for r in results],
            "attempts": [r.get("attempts", 1) for r in results],
            "finished_at": [r.get("finished_at", time.time()) for r in results],
            "worker": [r.get("worker", "") for r in results],
            "error": [r.get("error", "") for r in results],
            "log": [r.get("log", "") for r in results],
        }
        metric_names = sorted({m for r in results for m in r.get("metrics", {})})
        shapes = self.result_shapes()
        for m in metric_names:
            name = f"metric_{m}"
            created |= self._ensure_array(name, (), "float64", np.nan)
            columns[name] = [r.get("metrics", {}).get(m, np.nan) for r in results]
            shapes.setdefault(m, ())
        array_names = sorted({a for r in results for a in r.get("arrays", {})})
        dims_by_name = self.attrs.get("array_dims", {})
        for a in array_names:
            sample = next(np.asarray(r["arrays"][a]) for r in results if a in r.get("arrays", {}))
            dims = tuple(dims_by_name.get(a, [f"{a}_dim_{k}" for k in range(sample.ndim)]))
            created |= self._ensure_array(a, sample.shape, _array_dtype(sample), np.nan, dims)
            columns[a] = [r.get("arrays", {}).get(a) for r in results]
            shapes.setdefault(a, tuple(sample.shape))
        if created:
            # the shapes fixed by the first evaluations, so that a resumed run checks against them
            self.attrs = {
                **self.attrs,
                "result_shapes": {k: list(v) for k, v in sorted(shapes.items())},
            }
            self.root.attrs["l2lflow"] = self.attrs
            _quiet_consolidate(self.path)
        for name, col in columns.items():
            self._write_cells(name, generation, idx, col)
        reach("evaluate.columns", generation)
        self._write_cells("status", generation, idx, [r["status"] for r in results])
        reach("evaluate.committed", generation)

    def result_shapes(self) -> dict[str, tuple[int, ...]]:
        """Name -> shape of every metric (shape ``()``) and array the optimizee has returned
        so far: the first evaluation that returned a name fixed its shape."""
        recorded = self.attrs.get("result_shapes")
        if recorded is not None:
            return {k: tuple(v) for k, v in recorded.items()}
        if self._derived_shapes is not None:
            return dict(self._derived_shapes)
        # a store written before result_shapes existed (or whose optimizee has returned only a
        # fitness so far): its variables say the same. Listing them reads every variable's
        # metadata, so this is done once per store object: the variables that the shapes come
        # from are created only by write_results, which then records result_shapes
        shapes: dict[str, tuple[int, ...]] = {}
        for name in self.root.array_keys():
            dims = list(self.array(name).metadata.dimension_names or ())
            if name.startswith("metric_"):
                shapes[name[len("metric_") :]] = ()
            elif dims[:2] == _DIMS and len(dims) > 2 and name != "objectives":
                shapes[name] = tuple(self.array(name).shape[2:])
        self._derived_shapes = dict(shapes)
        return shapes

    def _write_cells(self, name: str, generation: int, idx: np.ndarray, values: list[Any]) -> None:
        """Write ``values`` of individuals ``idx`` into one generation row (one chunk) of
        ``name``: the row is read once (later batches reuse this writer's copy of it), the
        values go in as one column assignment (None: leave the cell as it is)."""
        arr = self.array(name)
        cached = self._rows.get(name)
        if cached is not None and cached[0] == generation:
            row = cached[1]
        else:
            row = np.asarray(arr[generation, ...])
            if arr.dtype.kind in "OT" or str(arr.dtype).startswith("<U") or arr.dtype == object:
                row = row.astype(object)
            elif not row.flags.writeable:
                row = row.copy()
        keep = [k for k, value in enumerate(values) if value is not None]
        if row.ndim == 1:
            column = np.empty(len(keep), dtype=row.dtype)
            try:
                column[:] = [values[k] for k in keep] if len(keep) < len(values) else values
            except (TypeError, ValueError):
                raise StoreError(
                    f"result {name!r}: a value is not a scalar of {row.dtype} (the store "
                    "holds one per individual)"
                ) from None
        else:
            for k in keep:
                if np.shape(values[k]) != row.shape[1:]:  # never broadcast one's value
                    raise StoreError(
                        f"result {name!r} of individual {int(idx[k])} has shape "
                        f"{np.shape(values[k])}, but the store holds {row.shape[1:]}: an "
                        "optimizee must return arrays of a fixed shape"
                    )
            column = np.array([values[k] for k in keep], dtype=row.dtype).reshape(
                len(keep), *row.shape[1:]
            )
        row[idx[keep]] = column
        arr[generation, ...] = row
        self._rows[name] = (generation, row)

    def _ensure_array(
        self,
        name: str,
        extra_shape: tuple[int, ...],
        dtype: Any,
        fill: Any,
        extra_dims: tuple[str, ...] = (),
    ) -> bool:
        if self.has(name):
            arr = self.array(name)
            if tuple(arr.shape[2:]) != tuple(extra_shape):
                raise StoreError(
                    f"result {name!r} has shape {extra_shape}, but earlier evaluations stored "
                    f"{tuple(arr.shape[2:])}: an optimizee must return arrays of a fixed shape"
                )
            return False
        pop = self.population_size
        self._variable_changed(
            name,
            _create_filled(
                self.root,
                name,
                shape=(self.n_generations, pop, *extra_shape),
                chunks=(1, pop, *extra_shape),
                dtype=dtype,
                fill_value=fill,
                dimension_names=[*_DIMS, *extra_dims],
            ),
        )
        return True

    def save_checkpoint(self, generation: int, state: dict[str, Any] | None, summary: dict) -> None:
        """Store the optimizer state after ``generation``'s tell; this finishes the generation."""
        payload = {"optimizer": state, "summary": summary}
        text = json.dumps(payload, separators=(",", ":"), allow_nan=False)
        reach("aggregate.commit", generation)
        self.array("optimizer/state")[generation] = text
        reach("aggregate.committed", generation)
        if self._n_aggregated is not None and generation >= self._n_aggregated:
            self._n_aggregated = generation + 1

    def write_objectives(self, generation: int, objectives: dict[str, Any]) -> None:
        """Store every objective on (generation, individual, objective) and the Pareto ranks."""
        names = list(objectives["names"])
        created = False
        if not self.has("objective"):
            coord = self.root.create_array(
                "objective",
                shape=(len(names),),
                chunks=(len(names),),
                dtype=str,
                fill_value="",
                dimension_names=["objective"],
                config=_WRITE_EVERY_CHUNK,
            )
            coord[:] = np.asarray(names, dtype=object)
            created = True
        created |= self._ensure_array(
            "objectives", (len(names),), "float64", np.nan, ("objective",)
        )
        if self._ensure_array("pareto_rank", (), "int64", -1):
            self.array("pareto_rank").attrs["long_name"] = (
                "Pareto front of the generation (0 = front, -1 = failed)"
            )
            created = True
        if created:
            _quiet_consolidate(self.path)
        self.array("objectives")[generation, ...] = objectives["values"]
        self.array("pareto_rank")[generation, :] = objectives["pareto_rank"]

    def ranked_individuals(self, direction: str) -> list[tuple[int, int]]:
        """(generation, individual) of every successful evaluation, best first (ties: earliest)."""
        n = self.n_aggregated()
        if n == 0:
            return []
        fitness = np.asarray(self.array("fitness")[:n, :], dtype=np.float64)
        status = np.asarray(self.array("status")[:n, :])
        ok = (status == DONE) & np.isfinite(fitness)
        key = np.where(ok, fitness if direction == "minimize" else -fitness, np.inf)
        order = np.argsort(key, axis=None, kind="stable")
        flat = [divmod(int(k), fitness.shape[1]) for k in order if np.isfinite(key.flat[k])]
        return [(int(g), int(i)) for g, i in flat]

    def write_meta_test(self, results: list[dict[str, Any]]) -> None:
        """Store meta-test results on the ``meta_test`` dimension (replacing earlier ones).

        ``meta_test_status`` marks the rows as written, as ``status`` does for evaluations: it
        is reset to pending before anything else changes and written last. Variables whose
        shape changes are replaced, and the snapshot committed, before any value is written.
        """
        k = len(results)
        columns: dict[str, tuple[Any, Any, Any, list[str]]] = {
            "meta_test_generation": ("int64", -1, [r["generation"] for r in results], []),
            "meta_test_individual": ("int64", -1, [r["individual"] for r in results], []),
            "meta_test_fitness": (
                "float64",
                np.nan,
                [r["fitness"] if r["ok"] else np.nan for r in results],
                [],
            ),
            "meta_test_error": (str, "", [r.get("error", "") for r in results], []),
        }
        for m in sorted({m for r in results for m in r.get("metrics", {})}):
            columns[f"meta_test_metric_{m}"] = (
                "float64",
                np.nan,
                [r.get("metrics", {}).get(m, np.nan) for r in results],
                [],
            )
        dims_by_name = self.attrs.get("array_dims", {})
        for a in sorted({a for r in results for a in r.get("arrays", {})}):
            sample = next(np.asarray(r["arrays"][a]) for r in results if a in r.get("arrays", {}))
            block = np.full((k, *sample.shape), np.nan)
            for j, r in enumerate(results):
                if a in r.get("arrays", {}):
                    block[j] = r["arrays"][a]
            dims = dims_by_name.get(a, [f"{a}_dim_{j}" for j in range(sample.ndim)])
            columns[f"meta_test_{a}"] = ("float64", np.nan, block, list(dims))
        # the marker last (dict order)
        columns["meta_test_status"] = (
            "int8",
            PENDING,
            [DONE if r["ok"] else FAILED for r in results],
            [],
        )
        if self.has("meta_test_status") and self.array("meta_test_status").shape == (k,):
            self.array("meta_test_status")[...] = PENDING  # the old rows are no longer valid
        changed = False
        for name in [n for n in self.root.array_keys() if n.startswith("meta_test")]:
            if name in columns and _same_layout(self.array(name), columns[name], k):
                continue
            del self.root[name]
            self._variable_changed(name, None)
            changed = True
        for name, (dtype, fill, values, dims) in columns.items():
            if self.has(name):
                continue
            shape = (k, *np.shape(values)[1:])
            self._variable_changed(
                name,
                _create_filled(
                    self.root,
                    name,
                    shape=shape,
                    chunks=(max(k, 1), *shape[1:]),
                    dtype=dtype,
                    fill_value=fill,
                    dimension_names=["meta_test", *dims],
                ),
            )
            changed = True
        if changed:
            _quiet_consolidate(self.path)
        for name, (dtype, _, values, _) in columns.items():
            if name == "meta_test_status":
                reach("meta_test.commit")
            self.array(name)[...] = np.asarray(values, dtype=object if dtype is str else dtype)
            reach("meta_test.array")
        reach("meta_test.committed")

    def meta_test_scores(self, chosen: list[tuple[int, int]]) -> list[float | None] | None:
        """The stored meta-test scores (None: failed) if the meta-test of exactly ``chosen``
        ((generation, individual), best first) is completely written, else None: a rerun of
        the step then has nothing to evaluate again."""
        names = ("meta_test_generation", "meta_test_individual", "meta_test_status")
        if not all(self.has(n) for n in (*names, "meta_test_fitness")):
            return None
        gens, inds, status = (np.asarray(self.array(n)[...]) for n in names)
        if list(zip(gens.tolist(), inds.tolist(), strict=True)) != [tuple(c) for c in chosen]:
            return None
        if np.any(status == PENDING):
            return None
        fitness = np.asarray(self.array("meta_test_fitness")[...], dtype=np.float64)
        return [float(f) if s == DONE else None for f, s in zip(fitness, status, strict=True)]

    def set_array_dims(self, array_dims: dict[str, tuple[str, ...]]) -> None:
        """Record the dimension names of an optimizee's array results (before they are written)."""
        dims = {k: list(v) for k, v in array_dims.items()}
        if self.attrs.get("array_dims") != dims:
            self.attrs = {**self.attrs, "array_dims": dims}
            _write_root_attrs(self.path, self.attrs)


def _create_expression_arrays(root: Any, space: Any, pop: int) -> None:
    """Each expression parameter: its integer genome on ``(generation, individual, <name>_gene)``
    (fixed length, so a generation is one chunk) and its simplified formula as text."""
    for p in space.parameters:
        if p.expression is None:
            continue
        genome = root.create_array(
            p.name,
            shape=(0, pop, p.expression.genome_length),
            chunks=(1, pop, p.expression.genome_length),
            dtype="int64",
            fill_value=-1,  # never a gene: a lost chunk shows
            dimension_names=[*_DIMS, f"{p.name}_gene"],
            config=_WRITE_EVERY_CHUNK,
        )
        genome.attrs.update({"l2l_role": "parameter", "l2l_kind": "expression"})
        genome.attrs["expression"] = {
            "inputs": list(p.expression.inputs),
            "operations": list(p.expression.operations),
            "n_nodes": p.expression.n_nodes,
            "constants": list(p.expression.constants),
        }
        formula = root.create_array(
            f"{p.name}_formula",
            shape=(0, pop),
            chunks=(1, pop),
            dtype=str,
            fill_value="",
            dimension_names=_DIMS,
            config=_WRITE_EVERY_CHUNK,
        )
        formula.attrs.update({"l2l_role": "formula", "long_name": f"{p.name} simplified (sympy)"})


def _unreadable_variable(path: Path) -> str:
    """The first node of the store at ``path`` whose metadata zarr cannot read, and why."""
    import zarr

    for meta in sorted(path.rglob("zarr.json")):
        if meta.parent == path:
            continue
        try:
            zarr.open(str(meta.parent), mode="r", zarr_format=3)
        except Exception as exc:  # noqa: BLE001 - reported
            text = (str(exc) or type(exc).__name__).splitlines()[0]
            return f"{meta.parent.relative_to(path).as_posix()!r} ({type(exc).__name__}: {text})"
    return "metadata"


@functools.cache
def _store_threads() -> Any:
    """A small thread pool for writes to many variables at once (Zarr's calls are thread-safe:
    each hands a coroutine to Zarr's one event loop)."""
    from concurrent.futures import ThreadPoolExecutor

    return ThreadPoolExecutor(max_workers=8, thread_name_prefix="l2lflow-store")


def _filled_row(arr: Any, value: Any) -> np.ndarray:
    """One generation row of ``arr`` holding ``value`` everywhere, as :meth:`ResultStore.
    _write_cells` keeps rows: strings as objects, numbers in the variable's own dtype."""
    dtype = np.dtype(arr.dtype)
    stringy = dtype.kind in "OTU"
    row = np.empty(arr.shape[1:], dtype=object if stringy else dtype)
    row[...] = value
    return row


def _create_filled(root: Any, name: str, **spec: Any) -> Any:
    """A new array of ``root`` with every chunk of its shape written (fill values) before it is
    committed, so that a missing chunk file of a committed variable is always damage."""
    arr = root.create_array(name, config=_WRITE_EVERY_CHUNK, **spec)
    if arr.size:
        arr[...] = arr.fill_value
    return arr


def _same_layout(arr: Any, column: tuple[Any, Any, Any, list[str]], k: int) -> bool:
    """Whether the existing array ``arr`` can take ``column`` (dtype, fill, values, dims)."""
    dtype, _, values, dims = column
    if tuple(arr.shape) != (k, *np.shape(values)[1:]):
        return False
    if list(arr.metadata.dimension_names or []) != ["meta_test", *dims]:
        return False
    if dtype is str:
        return np.dtype(arr.dtype).kind in "OTU"
    return np.dtype(arr.dtype) == np.dtype(dtype)


def _fill(dtype: Any) -> Any:
    if dtype is str or str(dtype).startswith("<U"):
        return ""
    if dtype == "bool":
        return False
    if dtype == "int64":
        return 0
    return np.nan


def _array_dtype(sample: np.ndarray) -> str:
    if sample.dtype.kind == "b":
        return "bool"
    return "float64"


def open_results(results: str | Path, **kwargs: Any):
    """Open an experiment's results as an :class:`xarray.Dataset` (the documented entry point).

    ``results`` is the experiment folder (``results/<name>``), the store itself, or a config
    file whose ``results`` folder to open. Keyword arguments go to :func:`xarray.open_zarr`.
    """
    import xarray as xr

    path = Path(results)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        from l2lflow.config import load_config

        path = Path(load_config(path)["results"])
    if path.name != STORE_NAME and (
        (path / STORE_NAME).exists() or not (path / "zarr.json").exists()
    ):
        path = path / STORE_NAME  # the experiment folder (named in errors by its store)
    if path.exists() and not path.is_dir():
        raise StoreError(f"{path}: is a file, expected a Zarr store folder")
    if not (path / "zarr.json").exists():
        raise StoreError(f"{path}: no l2lflow results store here")
    _read_attrs(path)  # metadata readable, an l2lflow store, a known format version
    if _snapshot(path) is not None:
        # the committed shapes: a generation being added is not there yet (module docstring)
        kwargs.setdefault("consolidated", True)
    return xr.open_zarr(str(path), **kwargs)
