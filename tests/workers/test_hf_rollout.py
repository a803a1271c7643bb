import dataclasses
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from verl.utils.tiny_model import build_tiny_model
from verl.workers.rollout.base import SamplingParams
from verl.workers.rollout.hf_rollout import HFRollout


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = build_tiny_model(tmp_path_factory.mktemp("tiny"), vocab_size=400, hidden_size=32, intermediate_size=64)
    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def test_generates_n_samples_per_prompt_with_exact_ids_and_logprobs(tiny):
    model, tok = tiny
    rollout = HFRollout(model, tok)
    prompts = [tok.encode("Who wrote Hamlet?"), tok.encode("Water boils at")]
    torch.manual_seed(0)
    results = rollout.generate(prompts, SamplingParams(max_new_tokens=6, n=3))
    assert len(results) == 6
    for r in results:
        assert 1 <= len(r.token_ids) <= 6 and len(r.logprobs) == len(r.token_ids)
        assert all(lp <= 0 for lp in r.logprobs)
        assert r.finish_reason == ("length" if len(r.token_ids) == 6 else "stop")
    # The reported log-probs are those of the sampled ids under the model (temperature 1, no filtering).
    first = results[0]
    ids = torch.tensor([prompts[0] + first.token_ids])
    logp = torch.log_softmax(model(ids).logits[0, len(prompts[0]) - 1 : -1], -1)
    expected = logp.gather(-1, torch.tensor(first.token_ids)[:, None]).squeeze(-1)
    assert torch.allclose(torch.tensor(first.logprobs), expected, atol=1e-4)


def test_greedy_is_deterministic_and_matches_argmax(tiny):
    model, tok = tiny
    rollout = HFRollout(model, tok)
    prompt = tok.encode("The capital of France is")
    a = rollout.generate([prompt], SamplingParams(max_new_tokens=5, greedy=True))[0]
    b = rollout.generate([prompt], SamplingParams(max_new_tokens=5, greedy=True))[0]
    assert a.token_ids == b.token_ids
    ids = torch.tensor([prompt])
    first_argmax = model(ids).logits[0, -1].argmax().item()
    assert a.token_ids[0] == first_argmax


def test_stop_string_ends_the_row_and_keeps_the_stop_tokens(tiny):
    model, tok = tiny
    rollout = HFRollout(model, tok)
    prompt = tok.encode("Numbers:")
    free = rollout.generate([prompt], SamplingParams(max_new_tokens=8, greedy=True))[0]
    # Use the decoded text of the greedy continuation's third token as a stop string: the
    # stopped row must end exactly where that text first completes.
    stop_text = tok.decode(free.token_ids[:3])[-2:]
    if not stop_text.strip():
        pytest.skip("greedy continuation is whitespace for this random model")
    stopped = rollout.generate([prompt], SamplingParams(max_new_tokens=8, greedy=True, stop=[stop_text]))[0]
    assert stopped.finish_reason == "stop"
    assert tok.decode(stopped.token_ids).endswith(stop_text)
    assert stopped.token_ids == free.token_ids[: len(stopped.token_ids)]
    assert stop_text not in tok.decode(stopped.token_ids[:-1])


def test_left_padding_does_not_change_a_rows_greedy_output(tiny):
    model, tok = tiny
    rollout = HFRollout(model, tok)
    short, long = tok.encode("Hi"), tok.encode("Photosynthesis turns sunlight into sugar")
    alone = rollout.generate([short], SamplingParams(max_new_tokens=4, greedy=True))[0]
    batched = rollout.generate([long, short], SamplingParams(max_new_tokens=4, greedy=True))[1]
    assert alone.token_ids == batched.token_ids


def test_update_weights_makes_it_generate_like_the_new_weights(tiny, tmp_path):
    model, tok = tiny
    other_path = build_tiny_model(tmp_path / "other", vocab_size=400, hidden_size=32, intermediate_size=64, seed=1)
    other = HFRollout(AutoModelForCausalLM.from_pretrained(other_path), tok)
    rollout = HFRollout(AutoModelForCausalLM.from_pretrained(model.name_or_path), tok)
    prompt = [tok.encode("Shakespeare wrote")]
    params = SamplingParams(max_new_tokens=6, greedy=True)
    before = rollout.generate(prompt, params)[0].token_ids
    assert before != other.generate(prompt, params)[0].token_ids  # the two models differ to begin with
    rollout.update_weights(other.model.state_dict().items())
    assert rollout.generate(prompt, params)[0].token_ids == other.generate(prompt, params)[0].token_ids
    with pytest.raises(KeyError, match="no_such.weight"):
        rollout.update_weights([("no_such.weight", torch.zeros(1))])


def test_empty_prompt_list(tiny):
    model, tok = tiny
    assert HFRollout(model, tok).generate([], SamplingParams(max_new_tokens=3)) == []


def test_logprobs_follow_temperature_and_top_k_and_ignore_checkpoint_generation_defaults(tiny, tmp_path):
    model, tok = tiny
    fresh = AutoModelForCausalLM.from_pretrained(model.name_or_path)
    fresh.generation_config.repetition_penalty = 3.0  # a checkpoint default that must not leak in
    rollout = HFRollout(fresh, tok)
    prompt = tok.encode("Who wrote Hamlet?")
    torch.manual_seed(1)
    result = rollout.generate([prompt], SamplingParams(max_new_tokens=5, temperature=0.7, top_k=20))[0]
    ids = torch.tensor([prompt + result.token_ids])
    logits = fresh(ids).logits[0, len(prompt) - 1 : -1] / 0.7
    kth = logits.topk(20, dim=-1).values[:, -1:]
    logits = logits.masked_fill(logits < kth, float("-inf"))
    expected = torch.log_softmax(logits, -1).gather(-1, torch.tensor(result.token_ids)[:, None]).squeeze(-1)
    assert torch.allclose(torch.tensor(result.logprobs), expected, atol=1e-4)


def test_bf16_rollout_samples_the_policy_the_actor_scores_far_into_the_context(tmp_path):
    """GPU runs roll out with a bf16 copy of the policy; the actor scores in bf16 too, with RoPE's
    inv_freq buffer kept in fp32 (FSDP mixed precision casts parameters only). The rollout copy
    must keep that buffer in fp32 as well: with Qwen2.5's theta of 1e6 and head_dim 128, a bf16
    inv_freq moved log-probs by 2.3 nats on average here, past position 1200."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from verl.utils.tiny_model import build_tokenizer
    from verl.workers.rollout.hf_rollout import rollout_copy

    tok = build_tokenizer([], 400)
    config = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=256,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=4096,
        rope_theta=1e6,
        pad_token_id=0,
        eos_token_id=2,
        initializer_range=0.2,
    )  # peaked, position-sensitive logits
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).float().save_pretrained(tmp_path)
    rollout = HFRollout(rollout_copy(AutoModelForCausalLM.from_pretrained(tmp_path), "cpu", torch.bfloat16), tok)
    assert rollout.model.model.rotary_emb.inv_freq.dtype == torch.float32
    actor = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16)

    prompt = torch.randint(3, len(tok), (1200,), generator=torch.Generator().manual_seed(0)).tolist()
    torch.manual_seed(1)
    sampled = rollout.generate([prompt], SamplingParams(max_new_tokens=32))[0]
    with torch.no_grad():
        logits = actor(torch.tensor([prompt + sampled.token_ids])).logits[0, len(prompt) - 1 : -1].float()
    scored = torch.log_softmax(logits, -1).gather(-1, torch.tensor(sampled.token_ids)[:, None]).squeeze(-1)
    gap = (torch.tensor(sampled.logprobs) - scored).abs()
    # bf16 rounding alone, incremental decoding against one full pass: 0.003 mean, 0.05 max measured.
    assert gap.mean() < 0.02 and gap.max() < 0.25, gap


def first_forward_widths(model) -> tuple[list[int], object]:
    """Records the width of the input of each call's first forward (the prefill)."""
    widths: list[int] = []
    seen = {"new_call": True}

    def hook(module, args, kwargs):
        if seen["new_call"]:
            widths.append(kwargs["input_ids"].shape[1])
            seen["new_call"] = False

    return widths, (model.register_forward_pre_hook(hook, with_kwargs=True), seen)


def test_a_continued_context_reuses_the_cache_and_samples_what_a_fresh_call_would(tiny):
    """A multi-turn loop resends each row's context with the new turn's tokens appended. With the
    kept cache only those tokens are computed; tokens and log-probs must equal a call without it,
    also when rows ended early (cached positions the next turn must not see), rows drop out and
    a row is sampled twice."""
    model, tok = tiny
    rollout = HFRollout(model, tok)
    contexts = [tok.encode("Who wrote Hamlet?"), tok.encode("Water"), tok.encode("Photosynthesis turns sunlight into")]
    free = rollout.generate(contexts[1:2], SamplingParams(max_new_tokens=6, greedy=True))[0]
    stop = tok.decode(free.token_ids[:2])[-1:]  # row 1 ends within two tokens
    assert stop.strip(), "pick another prompt: the greedy continuation is whitespace"
    params = SamplingParams(max_new_tokens=6, greedy=True, stop=[stop])
    widths, (handle, seen) = first_forward_widths(model)
    observations: list[list[int]] = []  # what the last turn appended to each context
    try:
        for turn, n in enumerate([1, 1, 2]):
            seen["new_call"] = True
            kept = rollout.generate(contexts, dataclasses.replace(params, n=n))
            seen["new_call"] = True
            fresh = HFRollout(model, tok).generate(contexts, dataclasses.replace(params, n=n))
            assert [r.token_ids for r in kept] == [r.token_ids for r in fresh]
            for a, b in zip(kept, fresh, strict=True):
                assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-5)
            if turn == 0:
                assert any(r.finish_reason == "stop" and len(r.token_ids) < 6 for r in kept)  # a row ended early
            else:  # only the new tokens were computed: the last sampled one and the observation
                assert widths[-2] == max(len(o) for o in observations) + 1 < widths[-1]
            observations = [tok.encode(" obs" * (i + 1)) for i in range(len(contexts))]
            results = kept[::n]
            contexts = [c + r.token_ids + o for c, r, o in zip(contexts, results, observations, strict=True)]
            if turn == 0:
                contexts, observations = contexts[::2], observations[::2]  # the middle row is done
    finally:
        handle.remove()


def test_sampled_log_probs_after_a_cached_turn_are_the_models(tiny):
    model, tok = tiny
    rollout = HFRollout(model, tok)
    prompts = [tok.encode("Who wrote Hamlet?"), tok.encode("Water boils at")]
    torch.manual_seed(0)
    first = rollout.generate(prompts, SamplingParams(max_new_tokens=5))
    contexts = [p + r.token_ids + tok.encode(" found") for p, r in zip(prompts, first, strict=True)]
    second = rollout.generate(contexts, SamplingParams(max_new_tokens=5, temperature=0.8))
    for context, result in zip(contexts, second, strict=True):
        logits = model(torch.tensor([context + result.token_ids])).logits[0, len(context) - 1 : -1] / 0.8
        expected = torch.log_softmax(logits, -1).gather(-1, torch.tensor(result.token_ids)[:, None]).squeeze(-1)
        assert torch.allclose(torch.tensor(result.logprobs), expected, atol=1e-4)


def test_the_kept_cache_is_dropped_by_new_weights_sleep_and_unrelated_prompts(tiny):
    model, tok = tiny
    rollout = HFRollout(model, tok)
    prompt = tok.encode("Who wrote Hamlet?")
    params = SamplingParams(max_new_tokens=4, greedy=True)
    widths, (handle, seen) = first_forward_widths(model)

    def call(context: list[int]) -> list[int]:
        seen["new_call"] = True
        return rollout.generate([context], params)[0].token_ids

    try:
        continued = prompt + call(prompt) + [5]
        call(continued)
        assert widths[-1] == 2  # reused: the last sampled token and the new one
        for drop in (lambda: rollout.update_weights(model.state_dict().items()), rollout.sleep):
            call(prompt)
            drop()
            call(continued)
            assert widths[-1] == len(continued)
        call(prompt)
        call(tok.encode("Water boils at") + [5, 6])  # begins with no kept row: computed whole
        assert widths[-1] == len(tok.encode("Water boils at")) + 2
    finally:
        handle.remove()


def test_rows_without_a_prompt_are_not_generated_for(tiny):
    """A multi-turn loop sends its finished rows empty, so that rows keep their worker: they get
    empty responses, and the other rows what they would get alone."""
    from verl.protocol import DataProto
    from verl.workers.rollout.base import generate_batch

    model, tok = tiny
    rows = [tok.encode("Who wrote Hamlet?"), [], tok.encode("Water")]
    width = max(len(r) for r in rows)
    ids = torch.full((3, width), tok.pad_token_id)
    mask = torch.zeros((3, width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r) :], mask[i, width - len(r) :] = torch.tensor(r), 1
    batch = DataProto.from_dict(tensors={"input_ids": ids, "attention_mask": mask})
    params = SamplingParams(max_new_tokens=4, greedy=True, n=2)
    out = generate_batch(HFRollout(model, tok), batch, params)
    assert len(out) == 6 and out.batch["response_mask"][2:4].sum() == 0
    alone = HFRollout(model, tok).generate([rows[0], rows[2]], params)
    for i, result in zip([0, 1, 4, 5], alone, strict=True):
        assert out.batch["responses"][i][out.batch["response_mask"][i].bool()].tolist() == result.token_ids


def test_generate_batch_returns_the_batch_schemas_rollout_layout(tiny):
    from verl.protocol import DataProto
    from verl.utils.batch_schema import Key, Stage, check_batch
    from verl.utils.torch_functional import left_pad
    from verl.workers.rollout.base import generate_batch

    model, tok = tiny
    ids, mask = left_pad([tok.encode("Who wrote Hamlet?"), tok.encode("Water")], tok.pad_token_id)
    batch = DataProto.from_dict(tensors={Key.INPUT_IDS: ids, Key.ATTENTION_MASK: mask})
    check_batch(batch, Stage.PROMPT)
    torch.manual_seed(0)
    out = generate_batch(HFRollout(model, tok), batch, SamplingParams(max_new_tokens=5, n=2))
    check_batch(out, Stage.ROLLOUT)
    assert out.batch[Key.RESPONSES].shape == (4, 5) and Key.ROLLOUT_LOG_PROBS in out.batch.keys()
