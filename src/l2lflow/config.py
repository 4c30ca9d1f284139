"""Experiment configs: load YAML, fill defaults, validate, and say exactly what is wrong.

The JSON schema (``schemas/config.schema.yaml``, also ``workflow/schemas/``) checks the form;
:func:`validate_config` adds what a schema cannot say (bounds in order, known optimizer and
optimizee, an optimizee's signature and options). Every error is one line that starts with the
key path, e.g. ``space.tau_m.low: must be < high (got low=20, high=5)``.
"""

from __future__ import annotations

import copy
import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

SCHEMA_PATH = Path(__file__).with_name("schemas") / "config.schema.yaml"

#: names used by the store itself; a parameter may not take them
RESERVED_NAMES = frozenset(
    {
        "generation",
        "individual",
        "fitness",
        "status",
        "runtime",
        "seed",
        "attempts",
        "error",
        "worker",
        "log",
        "finished_at",
        "task",
        "objective",
        "meta_test",
    }
)

#: config sections whose change would change the results: a resume with other values is refused
RESULT_KEYS = ("seed", "population_size", "direction", "space", "optimizer", "optimizee")


class ConfigError(ValueError):
    """An invalid experiment config; the message starts with the offending key path."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses duplicate keys (PyYAML silently keeps the last one)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False):
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ConfigError(
                f"{key}: duplicate key (line {key_node.start_mark.line + 1}); each key may appear once"
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file, refusing duplicate keys and non-mapping documents."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such config file")
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder, expected a YAML config file")
    try:
        data = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # noqa: S506 (safe loader)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}".replace("\n", " ")) from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: the config must be a mapping of keys, got {type(data).__name__}"
        )
    return data


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def _path(error_path: Any) -> str:
    parts = [str(p) for p in error_path]
    return ".".join(parts) if parts else "(top level)"


def _schema_error_message(error: Any) -> str:
    """One clear line for a jsonschema error: key path, then what is allowed."""
    where = _path(error.absolute_path)
    validator = error.validator
    if validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        allowed = ", ".join(error.schema.get("properties", {})) or "none"
        key = f"{where}.{extra[0]}" if error.absolute_path else (extra[0] if extra else where)
        return f"{key}: unknown key (allowed here: {allowed})"
    if validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        key = f"{where}.{missing}" if error.absolute_path else missing
        return f"{key}: required key is missing"
    if validator == "enum":
        allowed = ", ".join(repr(v) for v in error.validator_value)
        return f"{where}: {error.instance!r} is not allowed (allowed: {allowed})"
    if validator == "type":
        expected = error.validator_value
        expected = " or ".join(expected) if isinstance(expected, list) else expected
        return (
            f"{where}: expected {expected}, got {type(error.instance).__name__} {error.instance!r}"
        )
    if validator == "minProperties":
        return f"{where}: must not be empty"
    if validator == "pattern" or validator == "propertyNames":
        return f"{where}: {error.message} (names: letters, digits, '_', not starting with a digit)"
    return f"{where}: {error.message}"


def _fill_defaults(config: dict[str, Any], node: dict[str, Any]) -> None:
    """Fill schema defaults in place (object sections first, so nested defaults apply)."""
    for key, sub in node.get("properties", {}).items():
        if key not in config and "default" in sub:
            config[key] = copy.deepcopy(sub["default"])
        if isinstance(config.get(key), dict) and sub.get("type") == "object":
            _fill_defaults(config[key], sub)
    extra = node.get("additionalProperties")
    if isinstance(extra, dict) and extra.get("type") == "object":
        for key, value in config.items():
            if key not in node.get("properties", {}) and isinstance(value, dict):
                _fill_defaults(value, extra)


def validate_config(raw: dict[str, Any], *, check_code: bool = True) -> dict[str, Any]:
    """Return a validated copy of ``raw`` with defaults filled, or raise :class:`ConfigError`.

    ``check_code`` also resolves the optimizer and optimizee (imports user code) and checks the
    optimizee's signature and options.
    """
    import jsonschema

    if not isinstance(raw, dict):
        raise ConfigError(f"(top level): the config must be a mapping, got {type(raw).__name__}")
    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(raw), key=lambda e: (len(e.absolute_path), str(e.path)))
    if errors:
        raise ConfigError(_schema_error_message(errors[0]))
    config = copy.deepcopy(raw)
    _fill_defaults(config, schema())
    config.setdefault("results", f"results/{config['name']}")
    _check_space(config["space"])
    if check_code:
        _check_code(config)
    return config


def _check_space(space: dict[str, Any]) -> None:
    for name, spec in space.items():
        key = f"space.{name}"
        if name in RESERVED_NAMES or name.startswith(("metric_", "l2l_")):
            raise ConfigError(
                f"{key}: the name {name!r} is reserved by the results store; choose another "
                f"(reserved: {', '.join(sorted(RESERVED_NAMES))}, metric_*, l2l_*)"
            )
        kind = spec.get("type", "float")
        if kind == "choice":
            choices = spec.get("choices")
            if not choices:
                raise ConfigError(f"{key}.choices: a choice parameter needs a non-empty list")
            if extra := sorted(set(spec) & {"low", "high", "scale"}):
                raise ConfigError(
                    f"{key}.{extra[0]}: not used by a choice parameter (give choices)"
                )
            kinds = {type(c) for c in choices}
            if not (kinds <= {int, float} or kinds == {str} or kinds == {bool}):
                raise ConfigError(
                    f"{key}.choices: all numbers, all strings or all booleans (got {choices!r})"
                )
            if len({json.dumps(c) for c in choices}) != len(choices):
                raise ConfigError(f"{key}.choices: contains duplicates: {choices!r}")
            continue
        if "choices" in spec:
            raise ConfigError(f"{key}.choices: only allowed with type: choice (type is {kind})")
        for bound in ("low", "high"):
            if bound not in spec:
                raise ConfigError(f"{key}.{bound}: required for a {kind} parameter")
        low, high = spec["low"], spec["high"]
        if not low < high:
            raise ConfigError(f"{key}.low: must be < high (got low={low}, high={high})")
        if kind == "int" and (int(low) != low or int(high) != high):
            raise ConfigError(f"{key}: an int parameter needs integer bounds (got {low}, {high})")
        if spec.get("scale", "linear") == "log" and low <= 0:
            raise ConfigError(f"{key}.low: a log-scale parameter needs low > 0 (got {low})")


def _check_code(config: dict[str, Any]) -> None:
    from l2lflow.optimizees.base import OptimizeeError, check_signature, resolve_optimizee
    from l2lflow.optimizers.base import OptimizerError, get_optimizer_class
    from l2lflow.space import ParameterSpace

    try:
        cls = get_optimizer_class(config["optimizer"]["name"])
        space = ParameterSpace.from_config(config["space"])
        cls(
            dimension=space.dimension,
            population_size=config["population_size"],
            seed=0,
            direction=config["direction"],
            grid_points=space.grid_points,
            **config["optimizer"].get("options", {}),
        )
    except OptimizerError as exc:
        msg = str(exc)
        if not msg.startswith("optimizer."):
            msg = f"optimizer: {msg}"
        raise ConfigError(msg) from None
    except TypeError as exc:
        raise ConfigError(f"optimizer.options: {exc}") from None
    try:
        optimizee = resolve_optimizee(config["optimizee"]["name"])
        check_signature(optimizee, config["optimizee"].get("options", {}))
    except OptimizeeError as exc:
        raise ConfigError(str(exc)) from None
    if "meta_test" in config["optimizee"] and not optimizee.meta_test:
        raise ConfigError(
            f"optimizee.meta_test: {optimizee.name!r} has no held-out task family to meta-test on"
        )
    if config["execution"]["backend"] == "slurm" and not config["execution"].get("pools"):
        raise ConfigError("execution.pools: the slurm backend needs at least a 'cpu' pool")


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Load, merge ``overrides`` (e.g. Snakemake's ``--config``) and validate a config file."""
    raw = load_yaml(path)
    if overrides:
        raw = merge(raw, overrides)
    return validate_config(raw)


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``override`` into a copy of ``base``."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def result_config(config: dict[str, Any]) -> dict[str, Any]:
    """The part of a config that determines the results (see :data:`RESULT_KEYS`).

    Key order does not matter anywhere except in ``space``, where it orders the optimizer's
    dimensions: so ``parameter_order`` records it explicitly, and the rest is compared sorted.
    """
    part = {key: config.get(key) for key in RESULT_KEYS}
    part["failure_fitness"] = config.get("evaluation", {}).get("failure_fitness")
    part["parameter_order"] = list(config.get("space", {}))
    return json.loads(json.dumps(part, sort_keys=True))


def config_hash(config: dict[str, Any]) -> str:
    """A hash of :func:`result_config`."""
    text = json.dumps(result_config(config), sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def describe_changes(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Human-readable list of differences between two result configs, by key path."""
    changes = []
    keys = list(old) + [k for k in new if k not in old]
    for key in keys:
        path = f"{prefix}{key}"
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            changes.extend(describe_changes(a, b, prefix=f"{path}."))
        elif a != b:
            changes.append(f"{path}: {a!r} -> {b!r}")
    return changes
