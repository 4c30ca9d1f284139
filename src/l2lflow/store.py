"""The results store: one Zarr v3 store per experiment, readable with plain ``xr.open_zarr``.

Layout (root group, every array with ``dimension_names`` so xarray finds its dims)::

    generation (generation)                      coordinate, grows by one per sampled generation
    individual (individual)                      coordinate, 0 .. population_size-1
    <parameter> (generation, individual)         one per parameter of the space
    fitness, status, seed (generation, individual)
    metric_<name> (generation, individual)       extra scalar metrics an optimizee returns
    <array> (generation, individual, ...)        arrays an optimizee returns (traces, per-task scores)
    runtime, attempts, worker, error, log        provenance: how the evaluation went
    optimizer/state (generation)                 JSON checkpoint after each generation's tell

Every chunk holds one generation of one variable, and only the engine writes (workers return
results to it), so no two writers ever share a chunk (zarr 3 has no locks; see FACTS.md) and a
generation costs one file per variable. Zarr's local store writes each chunk atomically (temp
file + rename), so a kill never leaves a half-written chunk. ``status`` is written last: a
``done`` status implies that the individual's other values are already on disk.

Nothing in the store is ever unpickled or evaluated: metadata and optimizer checkpoints are JSON.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

FORMAT_VERSION = 1
STORE_NAME = "results.zarr"

PENDING, DONE, FAILED = 0, 1, 2
STATUS_MEANINGS = "pending done failed"

#: deterministic variables: equal bitwise across reruns, worker counts and interruptions
RESULT_VARIABLES = ("fitness", "status", "seed")
#: provenance: depends on the machine and the run (timings, worker ids)
PROVENANCE_VARIABLES = ("runtime", "attempts", "worker", "error", "log", "finished_at")

_DIMS = ["generation", "individual"]


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
            # not the consolidated snapshot: it goes stale as soon as an array grows
            self.root = zarr.open_group(
                str(self.path), mode=mode, zarr_format=3, use_consolidated=False
            )
        except Exception as exc:
            raise StoreError(f"{self.path}: cannot open the Zarr store ({exc})") from None
        try:
            # every variable's metadata must parse (the writer lists them when it grows the
            # store): refuse a store with an unreadable or foreign one now, before any work
            list(self.root.array_keys())
        except Exception:  # noqa: BLE001 - named below
            raise StoreError(
                f"{self.path}: variable {_unreadable_variable(self.path)} cannot be read; "
                f"`l2lflow check {self.results_dir}` lists the damage"
            ) from None
        self.attrs = attrs
        self.mode = mode
        self._arrays: dict[str, Any] = {}
        self._n_aggregated: int | None = None

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
        space = ParameterSpace.from_config(config["space"])
        pop = int(config["population_size"])
        root = zarr.open_group(str(path), mode="w-", zarr_format=3)
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
        }
        gen = root.create_array(
            "generation", shape=(0,), chunks=(4096,), dtype="int64", dimension_names=["generation"]
        )
        gen.attrs["long_name"] = "generation of the outer loop"
        ind = root.create_array(
            "individual", shape=(pop,), chunks=(pop,), dtype="int64", dimension_names=["individual"]
        )
        ind[:] = np.arange(pop)
        ind.attrs["long_name"] = "individual within its generation"
        spec = {p.name: (p.dtype, _fill(p.dtype)) for p in space.parameters}
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
            )
            if name == "status":
                arr.attrs.update(
                    {"flag_values": [PENDING, DONE, FAILED], "flag_meanings": STATUS_MEANINGS}
                )
            elif name in space.names:
                p = next(p for p in space.parameters if p.name == name)
                arr.attrs.update({"l2l_role": "parameter", "l2l_kind": p.kind})
        opt = root.create_group("optimizer")
        opt.create_array(
            "state",
            shape=(0,),
            chunks=(1,),
            dtype=str,
            fill_value="",
            dimension_names=["generation"],
        )
        _quiet_consolidate(path)
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
            store.root.attrs["l2lflow"] = store.attrs
            _quiet_consolidate(store.path)
        return store

    # ------------------------------------------------------------------ reading
    def array(self, name: str) -> Any:
        if name not in self._arrays:
            try:
                self._arrays[name] = self.root[name]
            except KeyError:
                raise StoreError(f"{self.path}: variable {name!r} is missing") from None
        return self._arrays[name]

    def has(self, name: str) -> bool:
        return name in self._arrays or name in self.root.array_keys()

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
        """How many generations have been sampled (rows in the store)."""
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
        """Add generation ``generation`` with its parameters and seeds; status pending."""
        n = self.n_generations
        if generation != n:
            raise StoreError(f"cannot add generation {generation}: the store has {n} generations")
        pop = self.population_size
        for name in self.root.array_keys():
            arr = self.array(name)
            if name == "individual":
                continue
            if arr.metadata.dimension_names and arr.metadata.dimension_names[0] == "generation":
                arr.resize((n + 1, *arr.shape[1:]))
        self.array("optimizer/state").resize((n + 1,))
        for name, column in values.items():
            self.array(name)[generation, :] = np.asarray(column).reshape(pop)
        self.array("seed")[generation, :] = np.asarray(seeds, dtype=np.int64)
        self.array("generation")[generation] = generation  # coordinate last: the row exists
        _quiet_consolidate(self.path)

    def write_results(self, generation: int, results: Iterable[dict[str, Any]]) -> None:
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
        for m in metric_names:
            name = f"metric_{m}"
            created |= self._ensure_array(name, (), "float64", np.nan)
            columns[name] = [r.get("metrics", {}).get(m, np.nan) for r in results]
        array_names = sorted({a for r in results for a in r.get("arrays", {})})
        dims_by_name = self.attrs.get("array_dims", {})
        for a in array_names:
            sample = next(np.asarray(r["arrays"][a]) for r in results if a in r.get("arrays", {}))
            dims = tuple(dims_by_name.get(a, [f"{a}_dim_{k}" for k in range(sample.ndim)]))
            created |= self._ensure_array(a, sample.shape, _array_dtype(sample), np.nan, dims)
            columns[a] = [r.get("arrays", {}).get(a) for r in results]
        if created:
            _quiet_consolidate(self.path)
        for name, col in columns.items():
            self._write_cells(name, generation, idx, col)
        self._write_cells("status", generation, idx, [r["status"] for r in results])

    def _write_cells(self, name: str, generation: int, idx: np.ndarray, values: list[Any]) -> None:
        """Read-modify-write one generation row (one chunk) of ``name``."""
        arr = self.array(name)
        row = np.asarray(arr[generation, ...])
        if arr.dtype.kind in "OT" or str(arr.dtype).startswith("<U") or arr.dtype == object:
            row = row.astype(object)
        for i, value in zip(idx, values, strict=True):
            if value is None:
                continue
            row[i] = value
        arr[generation, ...] = row

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
        self._arrays[name] = self.root.create_array(
            name,
            shape=(self.n_generations, pop, *extra_shape),
            chunks=(1, pop, *extra_shape),
            dtype=dtype,
            fill_value=fill,
            dimension_names=[*_DIMS, *extra_dims],
        )
        return True

    def save_checkpoint(self, generation: int, state: dict[str, Any] | None, summary: dict) -> None:
        """Store the optimizer state after ``generation``'s tell; this finishes the generation."""
        payload = {"optimizer": state, "summary": summary}
        text = json.dumps(payload, separators=(",", ":"), allow_nan=False)
        self.array("optimizer/state")[generation] = text
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
            )
            coord[:] = np.asarray(names, dtype=object)
            created = True
        created |= self._ensure_array(
            "objectives", (len(names),), "float64", np.nan, ("objective",)
        )
        created |= self._ensure_array("pareto_rank", (), "int64", -1)
        if created:
            _quiet_consolidate(self.path)
        self.array("objectives")[generation, ...] = objectives["values"]
        self.array("pareto_rank")[generation, :] = objectives["pareto_rank"]
        self.array("pareto_rank").attrs["long_name"] = (
            "Pareto front of the generation (0 = front, -1 = failed)"
        )

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
        """Store meta-test results on the ``meta_test`` dimension (replacing earlier ones)."""
        k = len(results)
        for name in [n for n in self.root.array_keys() if n.startswith("meta_test")]:
            del self.root[name]
            self._arrays.pop(name, None)
        columns: dict[str, tuple[Any, Any, list[Any]]] = {
            "meta_test_generation": ("int64", -1, [r["generation"] for r in results]),
            "meta_test_individual": ("int64", -1, [r["individual"] for r in results]),
            "meta_test_fitness": (
                "float64",
                np.nan,
                [r["fitness"] if r["ok"] else np.nan for r in results],
            ),
            "meta_test_status": ("int8", PENDING, [DONE if r["ok"] else FAILED for r in results]),
            "meta_test_error": (str, "", [r.get("error", "") for r in results]),
        }
        for m in sorted({m for r in results for m in r.get("metrics", {})}):
            columns[f"meta_test_metric_{m}"] = (
                "float64",
                np.nan,
                [r.get("metrics", {}).get(m, np.nan) for r in results],
            )
        for name, (dtype, fill, values) in columns.items():
            arr = self.root.create_array(
                name,
                shape=(k,),
                chunks=(max(k, 1),),
                dtype=dtype,
                fill_value=fill,
                dimension_names=["meta_test"],
            )
            arr[:] = np.asarray(values, dtype=object if dtype is str else dtype)
        dims_by_name = self.attrs.get("array_dims", {})
        for a in sorted({a for r in results for a in r.get("arrays", {})}):
            sample = next(np.asarray(r["arrays"][a]) for r in results if a in r.get("arrays", {}))
            dims = dims_by_name.get(a, [f"{a}_dim_{j}" for j in range(sample.ndim)])
            arr = self.root.create_array(
                f"meta_test_{a}",
                shape=(k, *sample.shape),
                chunks=(max(k, 1), *sample.shape),
                dtype="float64",
                fill_value=np.nan,
                dimension_names=["meta_test", *dims],
            )
            block = np.full((k, *sample.shape), np.nan)
            for j, r in enumerate(results):
                if a in r.get("arrays", {}):
                    block[j] = r["arrays"][a]
            arr[...] = block
        _quiet_consolidate(self.path)

    def set_array_dims(self, array_dims: dict[str, tuple[str, ...]]) -> None:
        """Record the dimension names of an optimizee's array results (before they are written)."""
        dims = {k: list(v) for k, v in array_dims.items()}
        if self.attrs.get("array_dims") != dims:
            self.attrs = {**self.attrs, "array_dims": dims}
            self.root.attrs["l2lflow"] = self.attrs
            _quiet_consolidate(self.path)


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
    return xr.open_zarr(str(path), **kwargs)
