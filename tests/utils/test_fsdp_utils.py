"""Building a sharded model where only rank 0 reads the weights (2 CPU ranks on gloo)."""

import os
import subprocess
import sys

from tests.conftest import REPO_ROOT
from verl.utils.tiny_model import build_tiny_model

TWO_RANKS = """
import os, socket, sys, torch, torch.distributed as dist, torch.multiprocessing as mp
from torch.distributed.tensor import DTensor
from transformers import AutoModelForCausalLM
from verl.config import PolicyModelConfig
from verl.utils.fsdp_utils import full_weights, shard_model
from verl.utils.lora import add_adapters
from verl.workers.fsdp_workers import load_causal_lm, load_value_model

def run(rank, path, port, variant):
    lora = variant == "lora"
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    model = load_causal_lm(path, False, weights=rank == 0)
    assert all(p.is_meta for p in model.parameters()) == (rank == 1)  # rank 1 never holds the weights
    if lora:
        model = add_adapters(model, PolicyModelConfig(lora_rank=4))
    model = shard_model(model, None, "cpu", 2)
    gathers = []
    full_tensor = DTensor.full_tensor
    DTensor.full_tensor = lambda self: gathers.append(1) or full_tensor(self)
    full = dict(full_weights(model))
    DTensor.full_tensor = full_tensor
    assert len(gathers) == len({id(p) for p in model.parameters()})  # tied weights gathered once
    plain = AutoModelForCausalLM.from_pretrained(path)
    if lora:
        assert {k for k in full if "lora_" not in k} == {k for k in add_adapters(
            AutoModelForCausalLM.from_pretrained(path), PolicyModelConfig(lora_rank=4)
        ).state_dict() if "lora_" not in k}
    else:
        expected = plain.state_dict()
        assert full.keys() == expected.keys() and all(torch.equal(full[k], v) for k, v in expected.items())
    x = torch.tensor([[5, 6, 7, 8, 9, 10]])
    logits = model(input_ids=x).logits
    gathered = [torch.empty_like(logits) for _ in range(2)]
    dist.all_gather(gathered, logits)
    torch.testing.assert_close(gathered[0], gathered[1], rtol=0, atol=0)  # the ranks hold one model
    torch.testing.assert_close(logits, plain(input_ids=x).logits)  # adapters start at B = 0
    value = shard_model(load_value_model(path, False, weights=rank == 0), None, "cpu", 2)
    v = value(input_ids=x).logits
    gathered = [torch.empty_like(v) for _ in range(2)]
    dist.all_gather(gathered, v)
    torch.testing.assert_close(gathered[0], gathered[1], rtol=0, atol=0)
    dist.destroy_process_group()

if __name__ == "__main__":
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(run, args=(sys.argv[1], port, sys.argv[2]), nprocs=2)
    print("BUILT")
"""


def build_on_two_ranks(tmp_path, variant: str) -> subprocess.CompletedProcess:
    path = build_tiny_model(
        tmp_path / "m", vocab_size=300, hidden_size=32, intermediate_size=64, tie_word_embeddings=variant == "tied"
    )
    script = tmp_path / "two_ranks.py"
    script.write_text(TWO_RANKS)
    return subprocess.run(
        [sys.executable, str(script), str(path), variant],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": REPO_ROOT},
    )


def test_rank_0_reads_the_weights_and_every_shard_gets_them(tmp_path):
    """Rank 1 builds on the meta device; after sharding, the gathered weights are the saved ones
    exactly, and both ranks compute the saved model's logits (rotary buffers included)."""
    run = build_on_two_ranks(tmp_path, "plain")
    assert run.returncode == 0 and "BUILT" in run.stdout, run.stderr[-3000:]


def test_lora_adapters_on_a_skeleton_get_rank_0s_initialisation(tmp_path):
    run = build_on_two_ranks(tmp_path, "lora")
    assert run.returncode == 0 and "BUILT" in run.stdout, run.stderr[-3000:]


def test_tied_embeddings_are_gathered_once_and_given_under_both_names(tmp_path):
    run = build_on_two_ranks(tmp_path, "tied")
    assert run.returncode == 0 and "BUILT" in run.stdout, run.stderr[-3000:]
