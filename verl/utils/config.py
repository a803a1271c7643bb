"""Typed configs that document and check themselves.

Every leaf field of a config dataclass is declared with ``option(default, help, ...)``: the help says
what the key does, its unit and what special values mean, and README's key tables are rendered from
it (``python -m verl.utils.config_docs``). ``choices`` and ``min`` are checked for every field by
``check_config_tree`` when a config is composed; checks that span several fields live in the owning
dataclass's ``check(key)`` method, next to the fields.
"""

import copy
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import Any

Choices = Sequence[str] | Callable[[], Sequence[str]]


class ConfigSection:
    """Base of the config dataclasses. A run works on a ``frozen`` copy of its config: once the run
    is set up, no part of it (driver, worker, plug-in) can assign a setting the others have read.
    (Lists inside stay lists: the check is on assignment, as for frozen dataclasses.)"""

    def __setattr__(self, name: str, value: Any) -> None:
        if self.__dict__.get("_frozen", False):
            raise dataclasses.FrozenInstanceError(
                f"{type(self).__name__}.{name}: the run's config is frozen once the run is set up; "
                "change it before (an override, or the config passed in)"
            )
        object.__setattr__(self, name, value)


def freeze(config: ConfigSection) -> None:
    """Makes a config tree read-only, in place (``dataclasses.replace`` still makes changed copies)."""
    for f in dataclasses.fields(config):  # type: ignore[arg-type]
        value = getattr(config, f.name)
        if isinstance(value, ConfigSection):
            freeze(value)
    object.__setattr__(config, "_frozen", True)


def option(
    default: Any,
    help: str,
    *,
    choices: Choices | None = None,
    min: float | None = None,
    nullable: bool = False,
    key: str | None = None,
) -> Any:
    """A documented dataclass field. ``choices``: the values a string key takes (or a function
    returning them, for names held in a registry); ``min``: the smallest value a number may take;
    ``nullable``: None passes those checks (an optional value left unset); ``key``: the KEY of the
    shell front doors (``train_grpo.sh KEY VALUE``) that sets it, their only source."""
    metadata = {"help": help, "choices": choices, "min": min, "nullable": nullable, "key": key}
    if isinstance(default, list | dict):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def choices_of(f: dataclasses.Field[Any]) -> list[str] | None:
    choices = f.metadata.get("choices")
    if choices is None:
        return None
    return list(choices() if callable(choices) else choices)


def leaf_fields(config: Any, prefix: str = "") -> Iterator[tuple[str, dataclasses.Field[Any], Any]]:
    """(dotted key, field, value) of every leaf of a config dataclass (an instance or the class)."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name) if not isinstance(config, type) else _default(f)
        if dataclasses.is_dataclass(value):
            yield from leaf_fields(value, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", f, value


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def check_config_tree(config: Any, prefix: str = "") -> None:
    """Refuses a value outside a field's ``choices`` or below its ``min``, then runs each section's
    own ``check(key)`` (children first), so every error names the full key. Every error of the tree
    is raised together, one line each."""
    errors = _tree_errors(config, prefix)
    if errors:
        raise ValueError(
            errors[0] if len(errors) == 1 else f"{len(errors)} settings to change:\n  " + "\n  ".join(errors)
        )


def _tree_errors(config: Any, prefix: str) -> list[str]:
    errors: list[str] = []
    for f in dataclasses.fields(config):
        key, value = f"{prefix}{f.name}", getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            errors += _tree_errors(value, f"{key}.")
            continue
        if value is None and f.metadata.get("nullable"):
            continue
        choices = choices_of(f)
        values = value if isinstance(value, list) else [value]
        bad = [v for v in values if choices is not None and v not in choices]
        if bad:
            errors.append(f"{key}={value!r}: use {'any' if isinstance(value, list) else 'one'} of {choices}")
            continue
        minimum = f.metadata.get("min")
        if minimum is not None and (value is None or value < minimum):
            errors.append(f"{key}={value} must be at least {minimum:g}")
    check = getattr(config, "check", None)
    if check is not None and not errors:  # a section's own check reads values its leaves have passed
        try:
            check(prefix.rstrip("."))
        except ValueError as e:
            errors.append(str(e))
    return errors
