"""The one table of peers' key names: each key as verl, ZeroSearch or Search-R1 spells it, its key
here (or none: no effect in this engine) and what the rewrite means. ``verl.config.compat`` reads
command lines by it; README's table "Coming from verl / ZeroSearch / Search-R1" is rendered from it
(``peer_key_table``).
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass

SEARCH_AGENT = "python -m zerosearch.train (train_grpo.sh / train_ppo.sh / train_reinforce.sh)"


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


def is_true(value: str) -> bool:
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
        "actor_rollout_ref.rollout.layered_summon",
        None,
        "verl",
        "every weight sync here gathers one tensor at a time, LoRA's merged weights included",
    ),
    PeerKey(
        "actor_rollout_ref.model.use_shm",
        None,
        "verl",
        "the model loads from its folder or hub id; copy it to /dev/shm and point model.path there to load from memory",
    ),
    PeerKey(
        "actor_rollout_ref.actor.state_masking",
        None,
        "ZeroSearch, Search-R1",
        "true only: observation tokens (documents) are always masked out of the loss here",
        refuse_unless=is_true,
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
        "(multi_turn.tool_config_path, refused here); the search agent reads Qwen's tool calls with "
        "actor_rollout_ref.rollout.agent.action_format=tool_call",
    ),
    PeerKey(
        "actor_rollout_ref.rollout.multi_turn.enable",
        None,
        "verl",
        "false only: verl's tool-calling rollout is not supported here (a multi-turn agent is an environment: "
        "actor_rollout_ref.rollout.agent.env)",
        refuse_unless=_is_false,
    ),
    PeerKey(
        "actor_rollout_ref.rollout.multi_turn.",
        None,
        "verl",
        "verl's tool-calling rollout; here a multi-turn agent is an environment (actor_rollout_ref.rollout.agent.env), "
        "which declares its own tools (the search agent's: action_format=tool_call); tool config files are not read",
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
        refuse_unless=is_true,
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
        refuse_unless=is_true,
        search_agent=True,
    ),
)


def peer_entry(key: str) -> tuple[PeerKey, str] | None:
    """The table's entry for ``key`` and the key it becomes (a renamed section keeps the rest)."""
    for entry in PEER_KEYS:
        if entry.old == key:
            return entry, entry.new or ""
        if entry.old.endswith(".") and key.startswith(entry.old):
            return entry, (entry.new or "") + key[len(entry.old) :]
    return None


def peer_key_table(section: str = "all") -> str:
    """README's table of ``PEER_KEYS``."""
    lines = ["| peer key | here | used by | note |", "|---|---|---|---|"]
    for entry in PEER_KEYS:
        here = f"`{entry.new}`" if entry.new else "no effect"
        note = entry.note.replace("|", "\\|")
        lines.append(f"| `{entry.old}` | {here} | {entry.peers} | {note} |")
    return "\n".join(lines) + "\n"
