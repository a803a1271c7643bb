"""The GPU path of one policy worker, checked in this process (no Ray), one line per check:
``PASS|FAIL|SKIP name: figure``. It needs torch and transformers (vLLM and Ray where installed) and
builds its own tiny models. On a machine without a GPU it runs the same checks on the CPU, which
keeps the script itself tested; the GPU-only checks then say SKIP.

    python scripts/gpu_check.py [--device cuda|cpu] [--out DIR] [--big] [--no-trainer]

``--big`` adds the actor update's speed on a random model of Qwen2.5-0.5B's shape. The process
exits 1 when any check failed.
"""

import argparse
import math
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from verl.config import PPOConfig  # noqa: E402
from verl.protocol import DataProto, RolloutSettings  # noqa: E402
from verl.utils.batch_schema import Key  # noqa: E402
from verl.utils.tiny_model import build_tiny_model  # noqa: E402
from verl.utils.torch_functional import left_pad, position_ids  # noqa: E402

RESULTS: list[str] = []
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense, per GPU


def check(name: str, run: Callable[[], str | None]) -> None:
    """Runs one check; it returns its figure, or None to be skipped (raising is a failure)."""
    try:
        figure = run()
        line = f"SKIP {name}" if figure is None else f"PASS {name}: {figure}"
    except Exception as e:
        line = f"FAIL {name}: {type(e).__name__}: {e}"
        traceback.print_exc(file=sys.stderr)
    RESULTS.append(line)
    print(line, flush=True)


def config_for(model: str, device: str, rollout: str, **actor) -> PPOConfig:
    config = PPOConfig()
    arr = config.actor_rollout_ref
    arr.model.path = model
    arr.rollout.name = rollout
    arr.rollout.n = 2
    arr.rollout.load_format = "dummy"
    arr.actor.ppo_mini_batch_size = 4
    arr.actor.ppo_micro_batch_size_per_gpu = 8
    arr.actor.use_kl_loss = False
    arr.actor.optim.lr = 1e-5
    arr.rollout.log_prob_micro_batch_size_per_gpu = 8
    arr.rollout.gpu_memory_utilization = 0.3
    for key, value in actor.items():
        setattr(arr.actor.fsdp_config, key, value)
    config.data.max_prompt_length = 16
    config.data.max_response_length = 16
    config.trainer.device = device
    return config


def prompts(pad_id: int) -> DataProto:
    rows = [[5 + i, 6, 7, 8 + i] for i in range(4)]
    ids, mask = left_pad(rows, pad_id)
    batch = DataProto.from_dict({Key.INPUT_IDS: ids, Key.ATTENTION_MASK: mask, Key.POSITION_IDS: position_ids(mask)})
    batch.meta_info["rollout"] = RolloutSettings(step=1, total_steps=2)
    return batch


def start_worker(config: PPOConfig, device: str):
    """One policy worker (actor, rollout) as rank 0 of 1, as a Ray worker group would start it."""
    import torch.distributed as dist

    from verl.workers.fsdp_workers import ActorRolloutRefWorker

    os.environ.update(RANK="0", WORLD_SIZE="1", VERL_DEVICE=device)
    worker = ActorRolloutRefWorker(config, "actor_rollout")
    if not dist.is_initialized():
        worker.init_distributed("127.0.0.1", free_port())
    worker.init_model()
    return worker


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def reserved_gib(device: str) -> float:
    return torch.cuda.memory_reserved() / 2**30 if device == "cuda" else float("nan")


def used_gib(device: str) -> float:
    if device != "cuda":
        return float("nan")
    free, total = torch.cuda.mem_get_info()
    return (total - free) / 2**30


def worker_checks(model: str, device: str, rollout: str) -> None:
    tolerance = 2e-2 if device == "cuda" else 1e-3  # bf16 on GPU, fp32 on CPU
    state: dict = {}

    def build() -> str:
        start = time.perf_counter()
        state["worker"] = start_worker(config_for(model, device, rollout), device)
        state["pad"] = state["worker"].tokenizer.pad_token_id or 0
        seconds = time.perf_counter() - start
        attention = state["worker"].actor.model.config._attn_implementation  # flash_attention_2 where installed
        memory = f", device memory in use {used_gib(device):.2f} GiB" if device == "cuda" else ""
        return f"{seconds:.1f} s, attention {attention}{memory}"

    def sync_and_generate() -> str:
        worker = state["worker"]
        worker.sync_rollout_weights()
        out = worker.generate_sequences(prompts(state["pad"]))
        state["batch"] = out
        return f"{len(out)} responses, {int(out.batch[Key.RESPONSE_MASK].sum())} tokens"

    def log_probs_agree() -> str:
        worker, batch = state["worker"], state["batch"]
        actor = worker.compute_log_prob(batch).batch[Key.OLD_LOG_PROBS]
        mask = batch.batch[Key.RESPONSE_MASK].bool()
        gap = (actor - batch.batch[Key.ROLLOUT_LOG_PROBS]).abs()[mask].max().item()
        state["old"] = actor
        if gap > tolerance:
            raise AssertionError(f"rollout vs actor log-prob max diff {gap:.2e} > {tolerance}")
        return f"max diff {gap:.2e} (tolerance {tolerance})"

    def sleep_releases_memory() -> str | None:
        if device != "cuda" or rollout != "vllm":  # the hf rollout keeps its copy; only vLLM sleeps
            return None
        before = used_gib(device)
        state["worker"].release_rollout()
        after = used_gib(device)
        if not after < before:
            raise AssertionError(f"device memory {before:.2f} -> {after:.2f} GiB")
        state["asleep"] = after
        return f"device memory in use {before:.2f} -> {after:.2f} GiB"

    def update() -> str:
        worker, batch = state["worker"], state["batch"]
        batch.batch[Key.OLD_LOG_PROBS] = state["old"]
        batch.batch[Key.ADVANTAGES] = torch.randn(batch.batch[Key.RESPONSES].shape)
        metrics = worker.update_actor(batch).meta_info["metrics"]
        norm = metrics["actor/grad_norm"]
        if not math.isfinite(norm) or norm <= 0:
            raise AssertionError(f"grad norm {norm}")
        return f"grad norm {norm:.3g}"

    def sync_again_and_wake() -> str:
        worker = state["worker"]
        worker.sync_rollout_weights()
        out = worker.generate_sequences(prompts(state["pad"]))
        figure = f"{len(out)} responses after the sync"
        if device == "cuda" and "asleep" in state:
            figure += f"; device memory in use {state['asleep']:.2f} -> {used_gib(device):.2f} GiB awake"
        return figure

    def remove_padding_agrees() -> str:
        actor, batch = state["worker"].actor, state["batch"]
        results = []
        for packed in (False, True):
            actor.remove_padding = packed
            log_probs, _ = actor.compute_log_prob(batch, 8, 1.0)
            results.append(log_probs)
        actor.remove_padding = False
        mask = batch.batch[Key.RESPONSE_MASK].bool()
        gap = (results[0] - results[1]).abs()[mask].max().item()
        if gap > tolerance:
            raise AssertionError(f"padded vs packed log-prob max diff {gap:.2e}")
        return f"max diff {gap:.2e}"

    for name, run in [
        ("build on meta and load (1 rank), engine asleep", build),
        ("sync weights to the rollout and generate", sync_and_generate),
        ("rollout log-probs = actor log-probs", log_probs_agree),
        ("sleep releases device memory", sleep_releases_memory),
        ("one actor update", update),
        ("sync again, wake, generate", sync_again_and_wake),
        ("use_remove_padding on/off give the same log-probs", remove_padding_agrees),
    ]:
        check(f"[{rollout}] {name}", run)
        if RESULTS[-1].startswith("FAIL") and name.startswith("build"):
            return


def offload_update(model: str, device: str, **offload: bool) -> str | None:
    """A policy worker whose parameters or optimizer state wait in host memory: one update."""
    if device != "cuda":
        return None
    worker = start_worker(config_for(model, device, "hf", **offload), device)
    worker.sync_rollout_weights()
    batch = worker.generate_sequences(prompts(worker.tokenizer.pad_token_id or 0))
    batch.batch[Key.OLD_LOG_PROBS] = worker.compute_log_prob(batch).batch[Key.OLD_LOG_PROBS]
    batch.batch[Key.ADVANTAGES] = torch.randn(batch.batch[Key.RESPONSES].shape)
    norm = worker.update_actor(batch).meta_info["metrics"]["actor/grad_norm"]
    if not math.isfinite(norm) or norm <= 0:
        raise AssertionError(f"grad norm {norm}")
    return f"grad norm {norm:.3g}, device memory in use {used_gib(device):.2f} GiB"


def train_and_resume(out: str, device: str, rollout: str) -> str | None:
    """Three steps of the trainer on the digits example, saved every step; then the saved run is
    asked for one more step and must resume at step 3 from its step-2 checkpoint."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return None
    import json
    import subprocess

    run = os.path.join(out, f"digits_{rollout}")
    example = os.path.join(REPO, "examples", "digits", "train.py")
    common = [
        f"trainer.device={device}",
        "trainer.n_gpus_per_node=1",
        f"actor_rollout_ref.rollout.name={rollout}",
        "trainer.save_freq=1",
        "trainer.test_freq=-1",
        "trainer.val_before_train=false",
    ]
    for steps in (2, 3):
        proc = subprocess.run(
            [sys.executable, example, "--out", run, "--algo", "grpo", "--heads", "2", *common,
             f"trainer.total_training_steps={steps}"],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        if proc.returncode:
            raise RuntimeError(proc.stderr[-2000:])
    with open(os.path.join(run, "checkpoints", "grpo", "metrics.jsonl")) as f:
        steps = [json.loads(line)["step"] for line in f]
    if steps != [1, 2, 3]:
        raise AssertionError(f"logged steps {steps}, expected [1, 2, 3]")
    return "steps 1-2 saved, step 3 resumed from global_step_2"


def update_speed(model: str, device: str, label: str) -> str | None:
    """Tokens per second of the actor's forward and backward, and MFU against the card's bf16 peak."""
    if device != "cuda":
        return None
    from verl.workers.actor import DataParallelPPOActor
    from verl.workers.fsdp_workers import load_causal_lm

    config = config_for(model, device, "hf").actor_rollout_ref
    net = load_causal_lm(model, False).to(device)
    params = sum(p.numel() for p in net.parameters())
    actor = DataParallelPPOActor(config.actor, net, device=device)
    batch, width = 8, 512
    ids = torch.randint(10, 300, (batch, width), device=device)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        for _ in range(2):
            actor.model(input_ids=ids).logits.float().logsumexp(-1).mean().backward()  # warm-up
        torch.cuda.synchronize()
        start = time.perf_counter()
        steps = 5
        for _ in range(steps):
            actor.model(input_ids=ids).logits.float().logsumexp(-1).mean().backward()
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    tokens = batch * width
    name = torch.cuda.get_device_name()
    peak = next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)
    mfu = 6 * params * tokens / seconds / peak if peak else float("nan")
    return f"{label}: {params / 1e6:.0f}M params, {tokens / seconds:,.0f} tokens/s, MFU {mfu:.1%} ({name})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default=None, help="folder for the tiny models (default: a temporary one)")
    parser.add_argument("--big", action="store_true", help="also time a random model of Qwen2.5-0.5B's shape")
    parser.add_argument("--no-trainer", action="store_true", help="leave out the trainer runs (the worker alone)")
    args = parser.parse_args()
    out = args.out or tempfile.mkdtemp(prefix="gpu_check_")
    print(f"torch {torch.__version__}, device {args.device}", flush=True)
    # Heads of 32: vLLM's CPU attention takes no smaller; the same model serves every engine.
    model = str(
        build_tiny_model(os.path.join(out, "tiny"), vocab_size=400, hidden_size=64, num_heads=2, num_kv_heads=1)
    )
    engines = ["hf"]
    try:
        import vllm  # noqa: F401

        engines.append("vllm")
    except ImportError:
        RESULTS.append("SKIP [vllm] worker checks: vLLM is not installed")
        print(RESULTS[-1], flush=True)
    for engine in engines:
        worker_checks(model, args.device, engine)
    check("param_offload: one update", lambda: offload_update(model, args.device, param_offload=True))
    check("optimizer_offload: one update", lambda: offload_update(model, args.device, optimizer_offload=True))
    for engine in [] if args.no_trainer else engines:
        check(
            f"[{engine}] three trainer steps, save and resume", lambda e=engine: train_and_resume(out, args.device, e)
        )
    check("actor update speed, tiny model", lambda: update_speed(model, args.device, "tiny"))
    if args.big:
        from transformers import AutoConfig

        shape = AutoConfig.for_model(
            "qwen2", hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
            num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True,
        )  # fmt: skip
        big = os.path.join(out, "qwen2.5-0.5b-shape")
        from transformers import AutoModelForCausalLM

        AutoModelForCausalLM.from_config(shape).save_pretrained(big)
        check("actor update speed, 0.5B shape", lambda: update_speed(big, args.device, "0.5B"))
    failed = [r for r in RESULTS if r.startswith("FAIL")]
    print(f"{len(RESULTS) - len(failed)} of {len(RESULTS)} checks passed or skipped; {len(failed)} failed", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
