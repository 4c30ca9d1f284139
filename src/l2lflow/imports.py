"""``package.module:attr`` references: how a config names code of your own (an optimizee
function, an optimizer class) that l2lflow does not register itself."""

from __future__ import annotations

import importlib
from typing import Any


def import_reference(reference: str, key: str) -> Any:
    """The object ``package.module:attr`` names (``attr`` may be dotted: ``Class.method``).

    Raises ``LookupError`` with one line that starts with the config ``key`` when the module
    cannot be imported (whatever it raised) or has no such attribute, so that a typo is found
    when the config is validated, not on a worker hours later.
    """
    module_name, _, attr = reference.partition(":")
    try:
        found: Any = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, SyntaxError, anything the module raises
        raise LookupError(
            f"{key}: cannot import module {module_name!r} of {reference!r}: "
            f"{type(exc).__name__}: {exc}"
        ) from None
    for part in attr.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise LookupError(f"{key}: module {module_name!r} has no attribute {attr!r}") from None
    return found
