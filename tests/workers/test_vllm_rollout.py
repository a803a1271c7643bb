"""The vLLM rollout on vLLM's CPU build, the real engine in this process: sampled ids and their
log-probs, stop strings, greedy decoding, and weights synced in memory."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from verl.config import RolloutConfig
from verl.utils.tiny_model import build_tiny_model
from verl.workers.rollout.base import SamplingParams
from verl.workers.rollout.vllm_rollout import SleepCycle, VLLMRollout, check_servable

PROMPTS = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14, 15, 16, 17, 18]]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Heads of 32 (the CPU attention's smallest) and tied embeddings, as the demo models have."""
    path = build_tiny_model(
        tmp_path_factory.mktemp("vllm_tiny"),
        vocab_size=400,
        hidden_size=64,
        intermediate_size=128,
        num_heads=2,
        num_kv_heads=1,
        tie_word_embeddings=True,
    )
    return str(path), AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


@pytest.fixture(scope="module")
def engine(tiny):
    import bm25s  # noqa: F401  # numba comes with it, as in evaluation with the corpus search: vLLM must still start

    config = RolloutConfig(name="vllm", load_format="auto", max_num_seqs=16)
    return VLLMRollout(tiny[0], config, max_model_len=128, dtype="float32", device="cpu", seed=0)


def scored(model, prompt: list[int], ids: list[int], temperature: float) -> torch.Tensor:
    """Log-probs of ``ids`` after ``prompt`` under ``model`` at ``temperature`` (one full forward pass)."""
    with torch.no_grad():
        logits = model(torch.tensor([prompt + ids])).logits[0, len(prompt) - 1 : -1]
    return torch.log_softmax(logits / temperature, -1).gather(1, torch.tensor(ids)[:, None])[:, 0]


def test_sampled_log_probs_are_those_of_the_distribution_sampled_from(tiny, engine):
    _, model, _ = tiny
    results = engine.generate(PROMPTS, SamplingParams(max_new_tokens=12, n=3, temperature=0.7))
    assert len(results) == 9  # the n samples of prompt i at i*n ... i*n+n-1
    for i, result in enumerate(results):
        assert 1 <= len(result.token_ids) == len(result.logprobs) <= 12
        gap = (torch.tensor(result.logprobs) - scored(model, PROMPTS[i // 3], result.token_ids, 0.7)).abs()
        assert gap.max() < 1e-4, gap  # fp32 on both sides: measured 5e-7


def test_greedy_takes_n_as_repeated_prompts_and_matches_transformers(tiny, engine):
    _, model, _ = tiny
    results = engine.generate(PROMPTS[:2], SamplingParams(max_new_tokens=8, n=2, greedy=True))
    assert len(results) == 4 and results[0].token_ids == results[1].token_ids
    for prompt, result in zip(PROMPTS[:2], results[::2], strict=True):
        expected = model.generate(
            torch.tensor([prompt]), max_new_tokens=8, do_sample=False, pad_token_id=0, eos_token_id=None
        )[0, len(prompt) :].tolist()
        assert result.token_ids == expected[: len(result.token_ids)] and result.finish_reason == "length"


def test_a_stop_string_ends_the_response_and_is_kept(tiny, engine):
    _, model, tokenizer = tiny
    prompt = PROMPTS[2]
    free = engine.generate([prompt], SamplingParams(max_new_tokens=10, greedy=True))[0].token_ids
    stop = tokenizer.decode(free[2:4])  # what the policy writes at its 3rd and 4th steps
    assert stop.strip()
    stopped = engine.generate([prompt], SamplingParams(max_new_tokens=10, greedy=True, stop=[stop]))[0]
    assert stopped.finish_reason == "stop" and stop in tokenizer.decode(stopped.token_ids)
    assert stopped.token_ids == free[: len(stopped.token_ids)] and len(stopped.token_ids) <= 4


def test_weights_synced_in_memory_change_what_the_engine_generates(tiny, engine):
    """A perturbed Hugging Face state dict (tied embeddings included) goes into the running engine;
    its greedy continuation then equals transformers' on the same weights, token for token."""
    path, _, _ = tiny
    changed = AutoModelForCausalLM.from_pretrained(path).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in changed.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * 0.05)
    before = engine.generate(PROMPTS, SamplingParams(max_new_tokens=8, greedy=True))
    engine.update_weights(changed.state_dict().items())
    after = engine.generate(PROMPTS, SamplingParams(max_new_tokens=8, greedy=True))
    assert [r.token_ids for r in after] != [r.token_ids for r in before]
    for prompt, result in zip(PROMPTS, after, strict=True):
        expected = changed.generate(
            torch.tensor([prompt]), max_new_tokens=8, do_sample=False, pad_token_id=0, eos_token_id=None
        )[0, len(prompt) :].tolist()
        assert result.token_ids == expected[: len(result.token_ids)]
    engine.sleep()  # no sleep mode on CPU: nothing happens, and generation goes on
    engine.wake_up()
    assert (
        engine.generate(PROMPTS[:1], SamplingParams(max_new_tokens=8, greedy=True))[0].token_ids == after[0].token_ids
    )


def test_a_sync_that_leaves_engine_weights_unloaded_is_an_error(tiny, engine):
    path, _, _ = tiny
    weights = AutoModelForCausalLM.from_pretrained(path).state_dict()
    partial = [(k, v) for k, v in weights.items() if k != "model.layers.1.mlp.down_proj.weight"]
    with pytest.raises(
        RuntimeError, match=r"left these engine weights unloaded: \['model.layers.1.mlp.down_proj.weight'\]"
    ):
        engine.update_weights(partial)
    engine.update_weights(weights.items())  # the whole state dict loads without complaint


def test_a_model_the_cpu_kernels_cannot_serve_is_named(tmp_path):
    narrow = build_tiny_model(tmp_path / "narrow", vocab_size=300, hidden_size=64, num_heads=4)  # heads of 16
    with pytest.raises(ValueError, match=r"narrow.*heads of size 16.*supports \[32, 64"):
        check_servable(str(narrow), False, "cpu")
    check_servable(str(narrow), False, "cuda")  # the GPU kernels take it


def test_a_vllm_without_in_memory_reload_is_refused_at_start(tiny, monkeypatch):
    import vllm

    monkeypatch.setattr(vllm, "__version__", "0.12.0")  # whose reload_weights takes no weights
    with pytest.raises(ImportError, match=r"cannot reload weights from memory .*install vllm>=0.14"):
        check_servable(tiny[0], False, "cpu")


def test_missing_vllm_names_the_install_command(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "vllm", None)  # what an environment without vLLM looks like
    with pytest.raises(ImportError, match=r"rollout.name=vllm needs vLLM.*pip install"):
        check_servable("unused", False, "cpu")


def test_a_context_longer_than_the_models_positions_is_fitted_to_them(tmp_path):
    from verl.workers.rollout.vllm_rollout import fit_to_model

    short = build_tiny_model(tmp_path / "short", vocab_size=300, max_position=256)
    assert fit_to_model(str(short), False, 1296) == 256  # e.g. a 1024-token prompt budget with 272 response
    assert fit_to_model(str(short), False, 200) == 200


class RecordingEngine:
    """Stands in for vllm.LLM: records the sleep and wake calls the rollout makes."""

    def __init__(self):
        self.calls = []

    def sleep(self, level):
        self.calls.append(("sleep", level))

    def wake_up(self, tags=None):
        self.calls.append(("wake_up", tags))


def test_a_sync_wakes_the_engine_in_stages_around_the_weight_load():
    engine = RecordingEngine()
    cycle = SleepCycle(engine, enabled=True)
    cycle.sleep()
    cycle.sleep()  # already asleep: nothing more
    cycle.reload(lambda: engine.calls.append(("load", None)))
    cycle.wake()  # awake: nothing more
    assert engine.calls == [("sleep", 2), ("wake_up", ["weights"]), ("load", None), ("wake_up", ["kv_cache"])]
    cycle.sleep()
    with pytest.raises(RuntimeError, match="dropped its weights when it slept: sync weights before it generates"):
        cycle.wake()
    off = RecordingEngine()
    idle = SleepCycle(off, enabled=False)  # CPU, or free_cache_engine=false
    idle.sleep()
    idle.reload(lambda: off.calls.append(("load", None)))
    assert off.calls == [("load", None)]


def test_a_rollout_that_dropped_its_weights_gets_them_again_before_it_generates():
    """Validation batches and critic warm-up steps generate twice with no update between: the
    worker syncs the same weights into an engine that slept without them."""
    from types import SimpleNamespace

    from verl.protocol import DataProto
    from verl.utils.batch_schema import Key
    from verl.workers.fsdp_workers import ActorRolloutRefWorker
    from verl.workers.rollout.base import GenerationResult

    engine = RecordingEngine()
    cycle = SleepCycle(engine, enabled=True)
    rollout = SimpleNamespace(
        pad_id=0,
        needs_weights=lambda: cycle.weights_dropped,
        wake_up=cycle.wake,
        generate=lambda prompts, params: [GenerationResult([7], [0.0], "stop") for _ in prompts],
    )
    syncs = []
    worker = SimpleNamespace(
        rollout=rollout,
        sync_rollout_weights=lambda: syncs.append(1) or cycle.reload(lambda: None),
        _sampling_params=lambda settings: SamplingParams(max_new_tokens=2),
        engine_group=None,
    )
    prompts = DataProto.from_dict({Key.INPUT_IDS: torch.tensor([[5, 6]]), Key.ATTENTION_MASK: torch.ones(1, 2)})
    cycle.sleep()
    out = ActorRolloutRefWorker.generate_sequences(worker, prompts)
    assert syncs == [1] and out.batch[Key.RESPONSES][0, 0] == 7
    ActorRolloutRefWorker.generate_sequences(worker, prompts)  # awake with its weights: no sync
    assert syncs == [1]
