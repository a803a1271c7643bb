"""Command lines read before Hydra composes: a launch script written for verl, ZeroSearch or
Search-R1 runs with its own keys.

``translate`` rewrites a command line's overrides by the table of ``verl.config.peer_keys``, notes
each rewrite once, and refuses every key it cannot place in one message, each with the closest key
this config has; ``read_overrides`` adds, beside them, every setting the config's checks refuse.
"""

import dataclasses
import difflib
import logging
import re
import typing
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from hydra.errors import ConfigCompositionException, HydraException

from verl.config.peer_keys import SEARCH_AGENT, PeerKey, is_true, peer_entry

logger = logging.getLogger(__name__)

# The first line of a message that lists its problems one per line below it.
_COUNTED = re.compile(
    r"^\d+ (settings to change|keys? this config does not have.*|overrides? this config cannot take):$"
)
# Hydra's own flags that take the next argument as their value.
_FLAGS_WITH_VALUE = (
    "--config-name",
    "-cn",
    "--config-path",
    "-cp",
    "--config-dir",
    "-cd",
    "--cfg",
    "-c",
    "--info",
    "--package",
    "-p",
    "--experimental-rerun",
)
FORK_MARK = "actor_rollout_ref.rollout.n_agent"  # a key only ZeroSearch's and Search-R1's trainers have


class PeerKeyError(ConfigCompositionException):
    """Overrides this config cannot take, every one named with what to do instead; ``accepted``:
    the command line without them."""

    def __init__(self, message: str, accepted: Sequence[str] = ()):
        super().__init__(message)
        self.problems = [line.strip() for line in message.splitlines()[1:]]
        self.accepted = list(accepted)


# Counted in trajectories where n_agent repeats the prompts (ZeroSearch, Search-R1), with the step's
# last mini-batch taking what is left: here the *_responses keys count so.
_MINI_BATCHES = {
    "actor_rollout_ref.actor.ppo_mini_batch_size": "actor_rollout_ref.actor.ppo_mini_batch_responses",
    "critic.ppo_mini_batch_size": "critic.ppo_mini_batch_responses",
}


def schema_keys(schema: type, prefix: str = "") -> dict[str, type]:
    """Every dotted key of a config dataclass, sections and leaves, with its annotated type."""
    keys: dict[str, type] = {}
    for name, hint in typing.get_type_hints(schema).items():
        if name.startswith("_"):
            continue
        keys[prefix + name] = hint
        if dataclasses.is_dataclass(hint):
            keys.update(schema_keys(typing.cast(type, hint), f"{prefix}{name}."))
    return keys


def leaf_keys(schema: type) -> list[str]:
    """The keys that hold values (not sections), sorted."""
    return sorted(k for k, hint in schema_keys(schema).items() if not dataclasses.is_dataclass(hint))


def closest_key(key: str, known: Sequence[str]) -> str | None:
    """The known key nearest in spelling, or the nearest by last name when the sections differ."""
    match = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if match:
        return match[0]
    leaf = key.rsplit(".", 1)[-1]
    by_leaf = {k.rsplit(".", 1)[-1]: k for k in known}
    match = difflib.get_close_matches(leaf, list(by_leaf), n=1, cutoff=0.7)
    return by_leaf[match[0]] if match else None


@dataclass
class Translated:
    overrides: list[str]  # the command line, in this config's keys
    notes: list[str]  # one line per rewritten, dropped or re-read key


def split_override(arg: str) -> tuple[str, str, str | None]:
    """(prefix: '', '+', '++' or '~'; key; value or None)."""
    prefix = ""
    for p in ("++", "+", "~"):
        if arg.startswith(p):
            prefix, arg = p, arg[len(p) :]
            break
    key, sep, value = arg.partition("=")
    return prefix, key, (value if sep else None)


def translate(args: Sequence[str], schema: type) -> Translated:
    """Rewrites a command line's Hydra overrides into ``schema``'s keys by ``PEER_KEYS``. Flags
    (``--config-name``...) and ``hydra.*`` keys pass unchanged. ``+key`` for a key the config has is
    a plain override (noted). Raises ``PeerKeyError`` naming every key that is unknown (with the
    closest known one) or whose value has no equivalent here."""
    known = schema_keys(schema)
    names = leaf_keys(schema)
    keys_given = {split_override(arg)[1] for arg in args}
    out: list[str] = []
    notes: list[str] = []
    problems: list[str] = []
    given: dict[str, str] = {}
    pending: list[tuple[int, PeerKey, str, str]] = []  # conversions that read other overrides
    for arg, flag in _flags_marked(args):
        if flag:
            out.append(arg)
            continue
        prefix, key, value = split_override(arg)
        if key.startswith(("hydra.", "hydra/")) or (value is None and prefix != "~"):
            out.append(arg)
            continue
        if key == "data.max_prompt_length" and "data.max_start_length" in keys_given:
            notes.append(
                f"data.max_prompt_length={value}: dropped; beside data.max_start_length it is the cap on the whole "
                "growing context, which here follows from the turns (data.max_start_length is the first prompt's)"
            )
            continue
        if prefix == "~" and key not in known:
            found = peer_entry(key)
            if found is not None and found[0].new and found[1] in known:
                notes.append(f"~{key} -> ~{found[1]}")
                out.append(f"~{found[1]}")
            else:
                problems.append(f"~{key}: not a key of this config, so nothing to delete")
            continue
        if key in _MINI_BATCHES and FORK_MARK in keys_given and prefix != "~":
            notes.append(f"{key}={value} -> {_MINI_BATCHES[key]}={value} (beside n_agent it counts trajectories)")
            out.append(f"{_MINI_BATCHES[key]}={value}")  # a key of this config: no '+' to add it
            given[_MINI_BATCHES[key]] = value or ""
            continue
        if key in known:
            if prefix == "+":
                notes.append(f"+{key}: {key} is a key of this config; taken as {key}={value}")
                prefix = ""
            out.append(f"{prefix}{key}" + ("" if value is None else f"={value}"))
            given[key] = value or ""
            continue
        found = peer_entry(key)
        if found is None:
            near = closest_key(key, names)
            problems.append(f"{key}: not a key of this config" + (f"; the closest is {near}" if near else ""))
            continue
        entry, new = found
        if entry.search_agent and "search" not in known:
            problems.append(f"{key}: a search agent's key; this entry point has no search agent, run {SEARCH_AGENT}")
            continue
        if entry.new and new not in known:  # a renamed section's key that is not one here either
            near = closest_key(new, names)
            problems.append(f"{key} ({new}): not a key of this config" + (f"; the closest is {near}" if near else ""))
            continue
        if entry.refuse_unless is not None and not entry.refuse_unless(value or ""):
            problems.append(f"{key}={value}: {entry.note}")
            continue
        if entry.new is None:
            notes.append(f"{key}: no effect here" + (f" ({entry.note})" if entry.note else ""))
            continue
        if entry.convert is not None:
            pending.append((len(out), entry, new, value or ""))
            out.append("")  # filled once every override is known
            continue
        notes.append(f"{key} -> {new}" + (f" ({entry.note})" if entry.note else ""))
        out.append(f"{new}={value}")
        given[new] = value or ""
    for index, entry, new, value in pending:
        converted = entry.convert(value, given) if entry.convert else value
        if converted is None:
            problems.append(f"{entry.old}={value}: {entry.note}")
            continue
        notes.append(f"{entry.old}={value} -> {new}={converted} ({entry.note})")
        out[index] = f"{new}={converted}"
    if FORK_MARK in keys_given and "algorithm.use_kl_in_reward" not in given:
        # their trainer puts the KL to the reference in the reward whenever the KL loss is off
        kl_loss = is_true(given.get("actor_rollout_ref.actor.use_kl_loss", "false"))
        if "actor_rollout_ref.actor.use_kl_loss" not in given:
            out.append("actor_rollout_ref.actor.use_kl_loss=false")
        out.append(f"algorithm.use_kl_in_reward={str(not kl_loss).lower()}")
        notes.append(
            f"{FORK_MARK}: a ZeroSearch / Search-R1 script, whose trainer puts the KL to the reference in the reward "
            f"whenever actor.use_kl_loss is off: algorithm.use_kl_in_reward={str(not kl_loss).lower()}"
        )
    if "retriever.url" in keys_given and "search.mode" in known:
        for mode in ("search.mode", "search.engine"):  # Search-R1 retrieves in training and validation
            if mode not in given:
                notes.append(f"retriever.url: {mode}=wiki (the retrieval server)")
                out.append(f"{mode}=wiki")
    if problems:
        raise PeerKeyError(_problem_message(problems), [arg for arg in out if arg])
    return Translated([arg for arg in out if arg], notes)


def _problem_message(problems: Sequence[str]) -> str:
    return f"{len(problems)} override{'s' if len(problems) > 1 else ''} this config cannot take:\n  " + "\n  ".join(
        problems
    )


def read_overrides(
    args: Sequence[str], schema: type, compose: Callable[[list[str]], typing.Any] | None = None
) -> list[str]:
    """``translate``, with each note printed once (before Hydra composes, so before any worker).
    When keys are refused and ``compose`` is given (overrides -> checked config), the rest is
    composed too, so that one message names every setting to change."""
    try:
        translated = translate(args, schema)
    except PeerKeyError as refused:
        problems = refused.problems
        if compose is not None:
            try:
                compose(overrides_only(refused.accepted))
            except (ValueError, HydraException) as e:
                lines = str(e).strip().splitlines()
                problems += [line.strip() for line in lines[1:]] if _COUNTED.match(lines[0]) else [str(e)]
        raise PeerKeyError(_problem_message(problems), refused.accepted) from None
    for line in translated.notes:
        logger.warning("%s", line)
    return translated.overrides


def _flags_marked(args: Sequence[str]) -> Iterator[tuple[str, bool]]:
    """Each argument of a Hydra command line, and whether it is a flag or a flag's value."""
    takes_value = False
    for arg in args:
        flag = takes_value or arg.startswith("-")
        takes_value = flag and arg in _FLAGS_WITH_VALUE
        yield arg, flag


def overrides_only(args: Sequence[str]) -> list[str]:
    """A Hydra command line without its flags and their values."""
    return [arg for arg, flag in _flags_marked(args) if not flag]


def config_name_of(args: Sequence[str], default: str) -> str:
    """The ``--config-name`` (``-cn``) of a Hydra command line, or ``default``."""
    for i, arg in enumerate(args):
        if arg in ("--config-name", "-cn") and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(("--config-name=", "-cn=")):
            return arg.split("=", 1)[1]
    return default
