"""Rollout engines side by side: the same multi-turn search batch generated with transformers
(``hf``) and with an in-process vLLM engine (``vllm``), on the same model, turns interleaved
(hf, vllm, hf, vllm, ...) so that a busy machine slows both alike. Each engine is also timed on pure
generation of the same tokens: one call whose prompts are the rollout's prompts followed by each
row's observation tokens, sampling as many tokens per row as the rollout did (no stop strings).
``multi ÷ pure`` is what the turns cost over computing the same tokens in one go.

    python benchmarks/rollout.py [--sizes 1m 30m] [--prompts 32] [--n 4] [--turns 2] [--tokens 48]
                                 [--repeats 3] [--device cpu|cuda]

Prints, per model size and engine, the rollout wall time per step (min / median / max over the
repeats), the generated tokens per second, the pure generation's tokens per second, their ratio,
and vLLM's speed-up over transformers. The models are
random tiny Qwen2s from ``verl.utils.tiny_model`` (heads of 64 dimensions, which vLLM's CPU
attention takes); an untrained policy rarely writes a valid action, so every turn runs to its token
budget and the invalid-action notice is appended between turns, as in a real multi-turn batch.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from verl.protocol import DataProto, RolloutSettings
from verl.utils.tiny_model import build_tiny_model
from verl.utils.torch_functional import left_pad, position_ids
from zerosearch import prompts
from zerosearch.eval import LocalRollout, build_engine
from zerosearch.generation import SearchGenerationManager
from zerosearch.train import load_config

SIZES = {  # name: build_tiny_model keywords
    "1m": dict(vocab_size=1024, hidden_size=128, intermediate_size=256, num_layers=2, num_heads=2, num_kv_heads=1),
    "30m": dict(vocab_size=4096, hidden_size=512, intermediate_size=1408, num_layers=8, num_heads=8, num_kv_heads=2),
}


def text_corpus() -> list[str]:
    """Enough distinct text for a 4096-id tokenizer to find its merges."""
    words = [f"{a}{b}{c}" for a in "bdfgklmnprstvz" for b in "aeiou" for c in ("", "n", "r", "s", "l")]
    return [" ".join(words[i : i + 40]) for i in range(0, len(words), 7)] + [prompts.POLICY_INSTRUCTION] * 4


def make_batch(tokenizer, n_prompts: int, width: int = 96) -> DataProto:
    rows = [
        tokenizer.encode(prompts.policy_prompt(f"Who founded company number {i}?"), add_special_tokens=False)[-width:]
        for i in range(n_prompts)
    ]
    ids, mask = left_pad(rows, tokenizer.pad_token_id, width)
    return DataProto.from_dict(
        tensors={"input_ids": ids, "attention_mask": mask, "position_ids": position_ids(mask)},
        non_tensors={
            "reward_model": [{"ground_truth": ["x"]}] * n_prompts,
            "extra_info": [{"question": f"q{i}", "index": i} for i in range(n_prompts)],
            "data_source": ["bench"] * n_prompts,
        },
    )


def managers(model_path: str, args: argparse.Namespace) -> dict[str, SearchGenerationManager]:
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    out = {}
    for engine in args.engines:
        config = load_config(
            "zerosearch_grpo",
            [
                f"actor_rollout_ref.rollout.name={engine}",
                f"actor_rollout_ref.rollout.n={args.n}",
                f"actor_rollout_ref.rollout.max_num_seqs={args.prompts * args.n}",
                f"data.max_response_length={args.tokens}",
                "data.max_prompt_length=96",
                f"actor_rollout_ref.rollout.agent.max_turns={args.turns}",
                "actor_rollout_ref.rollout.agent.max_obs_length=32",
                "search.mode=none",
                "search.engine=none",
            ],
        )
        rollout = LocalRollout(build_engine(config, model_path, tokenizer, args.device), greedy=False)
        out[engine] = SearchGenerationManager(config, rollout, tokenizer)  # search.mode none: no documents
    return out


def forget(manager: SearchGenerationManager) -> None:
    """Every timed call starts cold, as a training step's new prompts do: no KV cache kept by the
    hf rollout, nothing in vLLM's prefix cache."""
    engine = manager.wg.rollout
    if hasattr(engine, "llm"):  # not vLLM's sleep: on GPU it drops the weights until the next sync
        engine.llm.reset_prefix_cache()
    else:
        engine.sleep()
        engine.wake_up()


def step(manager: SearchGenerationManager, batch: DataProto) -> tuple[float, DataProto]:
    """One multi-turn rollout: seconds, and what it returned."""
    batch.meta_info["rollout"] = RolloutSettings(step=1, total_steps=2)
    forget(manager)
    start = time.perf_counter()
    out = manager.generate_sequences(batch)
    return time.perf_counter() - start, out


def pure_step(manager: SearchGenerationManager, rollout: DataProto) -> tuple[float, int]:
    """Pure generation of the same tokens as a multi-turn ``rollout``: one call whose prompts carry
    each row's observation tokens after its prompt, sampling as many tokens per row as the rollout
    sampled on average, no stop strings. Seconds, sampled tokens."""
    prompts_ids, prompt_mask = (
        rollout.batch["prompts"],
        rollout.batch["attention_mask"][:, : rollout.batch["prompts"].shape[1]],
    )
    observed = (
        rollout.batch["attention_mask"][:, prompts_ids.shape[1] :].bool() & ~rollout.batch["response_mask"].bool()
    )
    contexts = [
        prompts_ids[i][prompt_mask[i].bool()].tolist() + rollout.batch["responses"][i][observed[i]].tolist()
        for i in range(len(rollout))
    ]
    ids, mask = left_pad(contexts, manager.pad_id)
    per_row = max(round(int(rollout.batch["response_mask"].sum()) / len(rollout)), 1)
    request = DataProto.from_dict(
        tensors={"input_ids": ids, "attention_mask": mask, "position_ids": position_ids(mask)},
        meta_info={"rollout": RolloutSettings(step=1, total_steps=2, n=1, max_new_tokens=per_row, stop=[])},
    )
    forget(manager)
    start = time.perf_counter()
    out = manager.wg.generate_sequences(request)
    return time.perf_counter() - start, int(out.batch["response_mask"].sum())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", choices=sorted(SIZES), default=["1m", "30m"])
    parser.add_argument("--engines", nargs="+", choices=["hf", "vllm"], default=["hf", "vllm"])
    parser.add_argument("--prompts", type=int, default=32, help="prompts per step")
    parser.add_argument("--n", type=int, default=4, help="rollouts per prompt")
    parser.add_argument(
        "--turns", type=int, default=2, help="actor_rollout_ref.rollout.agent.max_turns: turns per rollout are this + 1"
    )
    parser.add_argument("--tokens", type=int, default=48, help="new tokens per turn")
    parser.add_argument("--repeats", type=int, default=3, help="measured steps per engine, after one warm-up")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    print(
        f"{args.prompts} prompts x {args.n} rollouts, {args.turns + 1} turns of up to {args.tokens} tokens, "
        f"{args.device}, torch threads {torch.get_num_threads()}",
        flush=True,
    )
    rows = [
        "| model | engine | s / step (min / median / max) | tokens / s (median) | pure generation tokens / s "
        "| multi ÷ pure (time per token) | vllm ÷ hf |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    with tempfile.TemporaryDirectory() as root:
        texts = text_corpus()
        for size in args.sizes:
            path = str(build_tiny_model(os.path.join(root, size), texts=texts, **SIZES[size]))
            params = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(path).parameters())
            engines = managers(path, args)
            batch = make_batch(AutoTokenizer.from_pretrained(path), args.prompts)
            times: dict[str, list[float]] = {name: [] for name in engines}
            rates: dict[str, list[float]] = {name: [] for name in engines}
            pure_rates: dict[str, list[float]] = {name: [] for name in engines}
            for repeat in range(args.repeats + 1):
                for name, manager in engines.items():
                    seconds, out = step(manager, batch)
                    n_tokens = int(out.batch["response_mask"].sum())
                    pure_seconds, pure_tokens = pure_step(manager, out)
                    if repeat:  # the first round warms both engines up
                        times[name].append(seconds)
                        rates[name].append(n_tokens / seconds)
                        pure_rates[name].append(pure_tokens / pure_seconds)
            medians = {name: statistics.median(t) for name, t in times.items()}
            for name in engines:
                rate, pure_rate = statistics.median(rates[name]), statistics.median(pure_rates[name])
                ratio = f"{medians['hf'] / medians['vllm']:.2f}×" if name == "vllm" and "hf" in medians else ""
                rows.append(
                    f"| {size} ({params / 1e6:.1f}M) | {name} | {min(times[name]):.2f} / {medians[name]:.2f} / "
                    f"{max(times[name]):.2f} | {rate:.0f} | {pure_rate:.0f} | {pure_rate / rate:.2f}× | {ratio} |"
                )
            print("\n".join(rows[-2:]), flush=True)
    print("\n" + "\n".join(rows))


if __name__ == "__main__":
    sys.exit(main())
