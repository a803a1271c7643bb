"""How much of what the actor computes is padding, for the batches a run actually produced.

Reads a run's rollout dumps (``trainer.rollout_data_dir``: one JSONL per step) and, with the
policy's tokenizer, rebuilds each step's token layout: left-padded prompts, right-padded responses.
Then prints, averaged over the steps, the share of token positions that are padding

- in the batch as the trainer holds it (with --prompt-width and --response-width: the configured
  budgets, e.g. every turn and observation of a multi-turn agent),
- in fixed micro-batches of --micro rows, each trimmed to its longest prompt and response,
- in micro-batches packed by token count (``use_dynamic_bsz``, --max-tokens per micro-batch),
- with ``use_remove_padding`` (none by construction: only real tokens run).

    python benchmarks/padding.py RUN/rollouts --model POLICY [--micro 32] [--max-tokens 4096]
                                 [--prompt-width 256 --response-width 960] [--time MODEL [--steps 3]]

With --time, the actor's update (one PPO step of DataParallelPPOActor, random token ids in those
layouts) also runs on MODEL for the first --steps steps, and the median seconds per update of each
layout are printed.
"""

import argparse
import glob
import json
import os
import statistics
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from verl.config import ActorConfig
from verl.protocol import DataProto
from verl.utils.micro_batch import micro_batches, token_slots
from verl.utils.torch_functional import position_ids
from verl.workers.actor import DataParallelPPOActor


def step_batch(path: str, tokenizer) -> DataProto:
    """The step's rows as a DataProto with just the layout: prompt left, response right."""
    rows = [json.loads(line) for line in open(path)]
    prompts = [len(tokenizer(r["prompt"], add_special_tokens=False)["input_ids"]) for r in rows]
    responses = [len(r["response_ids"]) for r in rows]
    prompt_width, response_width = max(prompts), max(responses)
    mask = torch.zeros(len(rows), prompt_width + response_width, dtype=torch.long)
    for i, (p, r) in enumerate(zip(prompts, responses, strict=True)):
        mask[i, prompt_width - p : prompt_width + r] = 1
    return DataProto.from_dict(
        tensors={
            "attention_mask": mask,
            "input_ids": mask.clone(),
            "position_ids": mask.clone(),
            "responses": torch.zeros(len(rows), response_width, dtype=torch.long),
        }
    )


def update_seconds(model_path: str, data: DataProto, micro: int, max_tokens: int | None, remove_padding: bool) -> float:
    """Wall seconds of one on-policy PPO update of ``model_path`` on ``data``'s layout."""
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_path)
    vocab = model.config.vocab_size
    mask = data.batch["attention_mask"]
    width = data.batch["responses"].shape[1]
    ids = torch.randint(3, vocab, mask.shape) * mask
    batch = DataProto.from_dict(
        tensors={
            "input_ids": ids,
            "attention_mask": mask,
            "position_ids": position_ids(mask),
            "responses": ids[:, -width:],
            "response_mask": mask[:, -width:],
            "advantages": torch.randn(mask.shape[0], width),
        }
    )
    config = ActorConfig(ppo_micro_batch_size_per_gpu=micro, use_dynamic_bsz=max_tokens is not None)
    if max_tokens is not None:
        config.ppo_max_token_len_per_gpu = max_tokens
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    actor = DataParallelPPOActor(config, model, optimizer, scheduler, remove_padding=remove_padding)
    start = time.perf_counter()
    actor.update_policy(batch, len(batch), temperature=1.0)
    return time.perf_counter() - start


def padding(data: DataProto, micro: int, max_tokens: int | None) -> float:
    width = data.batch["responses"].shape[1]
    slots = sum(token_slots(data[rows], width, remove_padding=False) for rows in micro_batches(data, micro, max_tokens))
    return 1 - int(data.batch["attention_mask"].sum()) / slots


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rollouts", help="a run's rollout_data_dir")
    parser.add_argument("--model", required=True, help="the policy (for its tokenizer)")
    parser.add_argument("--micro", type=int, default=32, help="ppo_micro_batch_size_per_gpu")
    parser.add_argument("--max-tokens", type=int, default=4096, help="ppo_max_token_len_per_gpu")
    parser.add_argument("--prompt-width", type=int, help="data.max_prompt_length of the run")
    parser.add_argument("--response-width", type=int, help="the response width the trainer holds")
    parser.add_argument("--time", metavar="MODEL", help="also time the actor's update on MODEL")
    parser.add_argument("--steps", type=int, default=3, help="steps timed with --time")
    args = parser.parse_args()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    paths = sorted(glob.glob(os.path.join(args.rollouts, "*.jsonl")), key=lambda p: int(os.path.basename(p)[:-6]))
    if not paths:
        parser.error(f"no <step>.jsonl rollout dumps in {args.rollouts}")
    held, fixed, dynamic = [], [], []
    for path in paths:
        data = step_batch(path, tokenizer)
        real = int(data.batch["attention_mask"].sum())
        if args.prompt_width and args.response_width:
            held.append(1 - real / (len(data) * (args.prompt_width + args.response_width)))
        fixed.append(padding(data, args.micro, None))
        dynamic.append(padding(data, args.micro, args.max_tokens))
    print(f"{len(paths)} steps of {args.rollouts}; padding share of the token positions computed (mean over steps):")
    if held:
        print(f"  batch as held ({args.prompt_width} + {args.response_width} columns): {statistics.mean(held):.3f}")
    print(f"  micro-batches of {args.micro} rows, trimmed: {statistics.mean(fixed):.3f}")
    print(f"  micro-batches of at most {args.max_tokens} tokens (use_dynamic_bsz): {statistics.mean(dynamic):.3f}")
    print("  use_remove_padding: 0.000 (only real tokens run)")
    if not args.time:
        return
    layouts = {
        f"micro-batches of {args.micro} rows": (None, False),
        f"use_dynamic_bsz ({args.max_tokens} tokens)": (args.max_tokens, False),
        f"use_remove_padding, micro-batches of {args.micro} rows": (None, True),
        f"use_remove_padding + use_dynamic_bsz ({args.max_tokens} tokens)": (args.max_tokens, True),
    }
    seconds: dict[str, list[float]] = {name: [] for name in layouts}
    for path in paths[: args.steps]:
        data = step_batch(path, tokenizer)
        for name, (max_tokens, packed) in layouts.items():  # interleaved, step by step
            seconds[name].append(update_seconds(args.time, data, args.micro, max_tokens, packed))
    timed = len(paths[: args.steps])
    print(f"actor update on {args.time}, {torch.get_num_threads()} threads (median s over {timed} steps):")
    for name, values in seconds.items():
        print(f"  {name}: {statistics.median(values):.2f}")


if __name__ == "__main__":
    main()
