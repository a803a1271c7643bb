"""Peers' key names, read before Hydra composes: a launch script written for verl, ZeroSearch or
Search-R1 runs with its own keys.

``PEER_KEYS`` is the one table: each peer key, its key here (or none: no effect in this engine)
and what the rewrite means. ``translate`` rewrites a command line's overrides by it, notes each
rewrite once, and refuses every key it cannot place in one message, each with the closest key this
config has. README's table "Coming from verl / ZeroSearch / Search-R1" is rendered from
``PEER_KEYS`` (``peer_key_table``).
"""

import dataclasses
import difflib
import logging
import re
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from hydra.errors import ConfigCompositionException

logger = logging.getLogger(__name__)

# The first line of a message that lists its problems one per line below it.
_COUNTED = re.compile(
    r"^\d+ (settings to change|keys? this config does not have.*|overrides? this config cannot take):$"
)
# Hydra's own flags that take the next argument as their value.
_FLAGS_WITH_VALUE = ("--config-name", "-cn", "--config-path", "-cp", "--config-dir", "-cd", "--cfg", "-c", "--info")
FORK_MARK = "actor_rollout_ref.rollout.n_agent"  # a key only ZeroSearch's and Search-R1's trainers have
SEARCH_AGENT = "python -m zerosearch.train (train_grpo.sh / train_ppo.sh / train_reinforce.sh)"


class PeerKeyError(ConfigCompositionException):
    """Overrides this config cannot take, every one named with what to do instead; ``accepted``:
    the command line without them."""

    def __init__(self, message: str, accepted: Sequence[str] = ()):
        super().__init__(message)
        self.problems = [line.strip() for line in message.splitlines()[1:]]
        self.accepted = list(accepted)


@dataclass(frozen=True)
class PeerKey:
    """``old`` as a peer spells it; ``new``: the same setting here, or None when it has no effect in
    this engine. ``convert(value, given)`` turns the peer's value into ours (``given``: every
    override of the command line, after renaming); it returns None where no exact conversion exists,
    and the key is refused with ``note``. ``refuse_unless(value)``: the values that mean what this
    engine does (others are refused with ``note``). A key ending in ``.`` renames a whole section."""

    old: str
    new: str | None
    peers: str
    note: str = ""
    convert: Callable[[str, Mapping[str, str]], str | None] | None = None
    refuse_unless: Callable[[str], bool] | None = None
    search_agent: bool = False  # a setting of a search agent: refused where the config has none


def _is_null(value: str) -> bool:
    return value.strip().lower() in ("null", "none", "~", "")


def _is_true(value: str) -> bool:
    return value.strip().lower() in ("true", "1", "yes")


def _is_false(value: str) -> bool:
    return value.strip().lower() in ("false", "0", "no")


def _world_size(given: Mapping[str, str]) -> int:
    def number(key: str, default: int) -> int:
        try:
            return int(given.get(key, default))
        except ValueError:
            return default

    return number("trainer.nnodes", 1) * number("trainer.n_gpus_per_node", 8)


def host_urls(value: str, port: int) -> str:
    """ZeroSearch's server address: a host or host:port, or several comma-separated, as a list of
    chat-completions URLs (``port`` where none is given)."""
    hosts = [h.strip() for h in value.split(",") if h.strip()]
    return "[" + ",".join(f"http://{h if ':' in h else f'{h}:{port}'}/v1" for h in hosts) + "]"


def _assistant_turns(value: str, given: Mapping[str, str]) -> str | None:
    """verl counts assistant turns; here environment steps, each followed by one more turn."""
    return str(int(value) - 1) if value.isdigit() and int(value) >= 1 else None


def _scheduling(value: str, given: Mapping[str, str]) -> str | None:
    return {"sync": "batch", "async": "async"}.get(value.strip())


# Counted in trajectories where n_agent repeats the prompts (ZeroSearch, Search-R1); here in prompts.
_MINI_BATCHES = ("actor_rollout_ref.actor.ppo_mini_batch_size", "critic.ppo_mini_batch_size")


def _prompts_of(trajectories: str, n_agent: str) -> str | None:
    if not (trajectories.isdigit() and n_agent.isdigit()) or int(n_agent) < 1 or int(trajectories) % int(n_agent):
        return None
    return str(int(trajectories) // int(n_agent))


def _nearest_mini_batch(trajectories: str, n_agent: str, args: Sequence[str]) -> str:
    """The mini-batch in prompts that makes as many optimizer steps as the peer's, where one does."""
    batch = next((v or "" for _, k, v in map(split_override, args) if k == "data.train_batch_size"), "")
    if not (trajectories.isdigit() and n_agent.isdigit() and batch.isdigit()) or int(trajectories) == 0:
        return ""
    responses = int(batch) * int(n_agent)
    steps = -(-responses // int(trajectories))  # theirs: the last mini-batch takes what is left
    if int(batch) % steps:
        return ""
    return (
        f" ({steps} optimizer step{'s' if steps > 1 else ''} per batch there, of up to {trajectories} of "
        f"{responses} responses; here ppo_mini_batch_size={int(batch) // steps} makes {steps} of "
        f"{responses // steps})"
    )


def _per_gpu(value: str, given: Mapping[str, str]) -> str | None:
    """A global micro-batch (responses over all workers) as responses per worker, where it divides."""
    world = _world_size(given)
    try:
        total = int(value)
    except ValueError:
        return None
    return str(total // world) if total % world == 0 and total >= world else None


_MICRO = (
    "a global micro-batch over all workers; here responses per worker: the value divided by "
    "trainer.nnodes × trainer.n_gpus_per_node, refused when it does not divide"
)

PEER_KEYS: tuple[PeerKey, ...] = (
    # ---- the data --------------------------------------------------------------------------------
    PeerKey(
        "data.max_start_length",
        "data.max_prompt_length",
        "ZeroSearch, Search-R1",
        "the first prompt's budget; their data.max_prompt_length, the cap on the whole growing context, is "
        "dropped beside it: here that length follows from the turns",
    ),
    PeerKey("data.max_obs_length", "actor_rollout_ref.rollout.agent.max_obs_length", "ZeroSearch, Search-R1"),
    PeerKey("data.shuffle_train_dataloader", "data.shuffle", "ZeroSearch, Search-R1"),
    PeerKey(
        "data.train_data_num",
        None,
        "ZeroSearch, Search-R1",
        "null only: every row of data.train_files is used (write a smaller file to train on fewer)",
        refuse_unless=_is_null,
    ),
    PeerKey(
        "data.val_data_num",
        None,
        "ZeroSearch, Search-R1",
        "null only: every row of data.val_files is used (write a smaller file to validate on fewer)",
        refuse_unless=_is_null,
    ),
    PeerKey(
        "data.return_raw_chat",
        None,
        "verl",
        "the rollout always receives the chat template's token ids; the raw messages stay in the rows",
    ),
    # ---- the workers -------------------------------------------------------------------------------
    PeerKey("actor_rollout_ref.rollout.n_agent", "actor_rollout_ref.rollout.n", "ZeroSearch, Search-R1"),
    PeerKey(
        "actor_rollout_ref.actor.ppo_micro_batch_size",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu",
        "verl (deprecated), ZeroSearch, Search-R1",
        _MICRO,
        convert=_per_gpu,
    ),
    PeerKey(
        "actor_rollout_ref.rollout.log_prob_micro_batch_size",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu",
        "verl (deprecated), ZeroSearch, Search-R1",
        _MICRO,
        convert=_per_gpu,
    ),
    PeerKey(
        "actor_rollout_ref.ref.log_prob_micro_batch_size",
        "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu",
        "verl (deprecated), ZeroSearch, Search-R1",
        _MICRO,
        convert=_per_gpu,
    ),
    PeerKey(
        "critic.ppo_micro_batch_size",
        "critic.ppo_micro_batch_size_per_gpu",
        "verl (deprecated), Search-R1",
        _MICRO,
        convert=_per_gpu,
    ),
    PeerKey(
        "actor_rollout_ref.actor.fsdp_config.grad_offload",
        None,
        "ZeroSearch, Search-R1",
        "FSDP2 keeps gradients with their parameters: param_offload moves both",
    ),
    PeerKey(
        "critic.model.fsdp_config.grad_offload",
        None,
        "Search-R1",
        "FSDP2 keeps gradients with their parameters: param_offload moves both",
    ),
    PeerKey("critic.model.fsdp_config.", "critic.fsdp_config.", "verl, Search-R1"),
    PeerKey(
        "actor_rollout_ref.actor.state_masking",
        None,
        "ZeroSearch, Search-R1",
        "true only: observation tokens (documents) are always masked out of the loss here",
        refuse_unless=_is_true,
    ),
    # ---- the trainer ------------------------------------------------------------------------------
    PeerKey(
        "trainer.val_only",
        None,
        "verl, ZeroSearch, Search-R1",
        "false only: to evaluate a model without training, run python -m zerosearch.eval (scripts/eval.sh)",
        refuse_unless=_is_false,
    ),
    PeerKey(
        "trainer.default_hdfs_dir",
        None,
        "verl, ZeroSearch, Search-R1",
        "null only: checkpoints go to trainer.default_local_dir",
        refuse_unless=_is_null,
    ),
    PeerKey(
        "trainer.use_legacy_worker_impl",
        None,
        "verl",
        "one worker implementation here (FSDP2 workers beside an in-process rollout engine)",
    ),
    PeerKey(
        "algorithm.no_think_rl",
        None,
        "ZeroSearch, Search-R1",
        "false only: true stopped their rollout with an error at its first step",
        refuse_unless=_is_false,
    ),
    # ---- multi-turn rollout ----------------------------------------------------------------------
    PeerKey(
        "actor_rollout_ref.rollout.mode",
        "actor_rollout_ref.rollout.agent.scheduling",
        "verl",
        "sync -> batch (lockstep turns), async -> async (each trajectory on its own); the engine stays in the "
        "workers either way",
        convert=_scheduling,
    ),
    PeerKey(
        "actor_rollout_ref.rollout.multi_turn.max_assistant_turns",
        "actor_rollout_ref.rollout.agent.max_turns",
        "verl",
        "assistant turns there, environment steps here: the value less one",
        convert=_assistant_turns,
    ),
    PeerKey(
        "actor_rollout_ref.rollout.multi_turn.format",
        None,
        "verl",
        "the parser of tool calls in verl's tool agent, which parses nothing without tools "
        "(multi_turn.tool_config_path, refused here)",
    ),
    PeerKey(
        "actor_rollout_ref.rollout.multi_turn.",
        None,
        "verl",
        "verl's tool-calling rollout; here a multi-turn agent is an environment (actor_rollout_ref.rollout.agent.env, "
        "the search agent's reads <search> tags): tool-call formats and tool config files are not supported yet",
        refuse_unless=lambda value: False,
    ),
    # ---- the search agent's own keys --------------------------------------------------------------
    PeerKey("max_turns", "actor_rollout_ref.rollout.agent.max_turns", "Search-R1", search_agent=True),
    PeerKey("trainer.max_turns", "actor_rollout_ref.rollout.agent.max_turns", "ZeroSearch", search_agent=True),
    PeerKey(
        "trainer.do_search",
        None,
        "ZeroSearch",
        "true only: the search agent always searches (search.mode=none gives no documents)",
        refuse_unless=_is_true,
        search_agent=True,
    ),
    PeerKey("trainer.reward_function", "agent.reward_metric", "ZeroSearch", search_agent=True),
    PeerKey("retriever.search_mode", "search.mode", "ZeroSearch", search_agent=True),
    PeerKey("retriever.search_engine", "search.engine", "ZeroSearch", search_agent=True),
    PeerKey("retriever.simulate_llm", "search.simulator.model", "ZeroSearch", search_agent=True),
    PeerKey(
        "retriever.llm_ip",
        "search.simulator.server_urls",
        "ZeroSearch",
        "the simulator's host, served on port 6001",
        convert=lambda value, given: host_urls(value, 6001),
        search_agent=True,
    ),
    PeerKey("retriever.temperature", "search.simulator.temperature", "ZeroSearch", search_agent=True),
    PeerKey("retriever.start_threshold", "search.curriculum.start_threshold", "ZeroSearch", search_agent=True),
    PeerKey("retriever.end_threshold", "search.curriculum.end_threshold", "ZeroSearch", search_agent=True),
    PeerKey("agent.max_turns", "actor_rollout_ref.rollout.agent.max_turns", "earlier versions of this project"),
    PeerKey(
        "agent.max_obs_length", "actor_rollout_ref.rollout.agent.max_obs_length", "earlier versions of this project"
    ),
    PeerKey("retriever.topk", "search.topk", "ZeroSearch, Search-R1", search_agent=True),
    PeerKey(
        "retriever.url",
        "search.retriever_url",
        "Search-R1",
        "a retrieval server: search.mode and search.engine become wiki unless given",
        search_agent=True,
    ),
    PeerKey(
        "do_search",
        None,
        "Search-R1",
        "true only: the search agent always searches (search.mode=none gives no documents)",
        refuse_unless=_is_true,
        search_agent=True,
    ),
)


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


def peer_entry(key: str) -> tuple[PeerKey, str] | None:
    """The table's entry for ``key`` and the key it becomes (a renamed section keeps the rest)."""
    for entry in PEER_KEYS:
        if entry.old == key:
            return entry, entry.new or ""
        if entry.old.endswith(".") and key.startswith(entry.old):
            return entry, (entry.new or "") + key[len(entry.old) :]
    return None


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
    takes_value = False
    for arg in args:
        if takes_value or arg.startswith("-"):
            out.append(arg)
            takes_value = arg in _FLAGS_WITH_VALUE
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
        if key in _MINI_BATCHES and "actor_rollout_ref.rollout.n_agent" in keys_given:
            n_agent = next(v for _, k, v in map(split_override, args) if k == "actor_rollout_ref.rollout.n_agent")
            prompts = _prompts_of(value or "", n_agent or "")
            if prompts is None:
                problems.append(
                    f"{key}={value}: beside actor_rollout_ref.rollout.n_agent={n_agent} it counts trajectories, here "
                    f"prompts (times rollout.n), and {value}/{n_agent} is not whole: give a multiple of n_agent"
                    + _nearest_mini_batch(value or "", n_agent or "", args)
                )
            else:
                notes.append(f"{key}={value} trajectories -> {key}={prompts} prompts (n_agent={n_agent})")
                out.append(f"{key}={prompts}")
                given[key] = prompts
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
        if entry.search_agent and "search" not in known or entry.new and new not in known:
            problems.append(f"{key}: a search agent's key; this entry point has no search agent, run {SEARCH_AGENT}")
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
        kl_loss = given.get("actor_rollout_ref.actor.use_kl_loss", "false").strip().lower() in ("true", "1", "yes")
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
                compose([arg for arg in refused.accepted if not arg.startswith("-")])
            except (ValueError, ConfigCompositionException) as e:
                lines = str(e).strip().splitlines()
                problems += [line.strip() for line in lines[1:]] if _COUNTED.match(lines[0]) else [str(e)]
        raise PeerKeyError(_problem_message(problems), refused.accepted) from None
    for line in translated.notes:
        logger.warning("%s", line)
    return translated.overrides


def config_name_of(args: Sequence[str], default: str) -> str:
    """The ``--config-name`` (``-cn``) of a Hydra command line, or ``default``."""
    for i, arg in enumerate(args):
        if arg in ("--config-name", "-cn") and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--config-name="):
            return arg.split("=", 1)[1]
    return default


def peer_key_table(section: str = "all") -> str:
    """README's table of ``PEER_KEYS``."""
    lines = ["| peer key | here | used by | note |", "|---|---|---|---|"]
    for entry in PEER_KEYS:
        here = f"`{entry.new}`" if entry.new else "no effect"
        note = entry.note.replace("|", "\\|")
        lines.append(f"| `{entry.old}` | {here} | {entry.peers} | {note} |")
    return "\n".join(lines) + "\n"
