"""Which checkpoint a restart resumes from, and what it restores."""

import os

import pytest

from verl.utils.checkpoint import LATEST_FILE, checkpoint_dir, load_first, mark_latest, resume_dirs


def test_auto_takes_the_step_marked_latest(tmp_path):
    assert resume_dirs("auto", None, str(tmp_path)) == []  # nothing saved yet: start afresh
    mark_latest(str(tmp_path), 4)
    mark_latest(str(tmp_path), 8)
    assert (tmp_path / LATEST_FILE).read_text() == "8" and not (tmp_path / (LATEST_FILE + ".tmp")).exists()
    for step in (2, 4, 8, 12):  # 12: an interrupted save, never marked latest
        (tmp_path / f"global_step_{step}").mkdir()
    (tmp_path / "global_step_x").mkdir()
    assert resume_dirs("auto", None, str(tmp_path)) == [checkpoint_dir(str(tmp_path), s) for s in (8, 4, 2)]
    assert checkpoint_dir(str(tmp_path), 8) == str(tmp_path / "global_step_8")


def test_disable_and_resume_path(tmp_path):
    mark_latest(str(tmp_path), 3)
    assert resume_dirs("disable", None, str(tmp_path)) == []
    (tmp_path / "global_step_1").mkdir()
    assert resume_dirs("resume_path", str(tmp_path / "global_step_1"), str(tmp_path)) == [
        str(tmp_path / "global_step_1")
    ]
    with pytest.raises(FileNotFoundError, match="resume_from_path='.*global_step_9'"):
        resume_dirs("resume_path", str(tmp_path / "global_step_9"), str(tmp_path))


def test_an_unreadable_checkpoint_falls_back_to_the_one_before(caplog):
    tried = []

    def load(step_dir):
        tried.append(step_dir)
        if step_dir != "global_step_4":
            raise OSError(f"{step_dir}/dcp: header too small")

    assert load_first(["global_step_8", "global_step_4", "global_step_2"], load) == "global_step_4"
    assert tried == ["global_step_8", "global_step_4"]
    assert "could not resume from global_step_8 (OSError" in caplog.text
    assert load_first([], load) is None
    with pytest.raises(RuntimeError, match="no checkpoint could be loaded.*global_step_8/dcp: header too small"):
        load_first(["global_step_8", "global_step_6"], load)


RESHARD = """
import os, socket, sys, torch, torch.distributed as dist
from torch.distributed.fsdp import fully_shard
from transformers import AutoModelForCausalLM
from verl.config import ActorConfig
from verl.utils.checkpoint import load_checkpoint, save_checkpoint
from verl.utils.fsdp_utils import build_optimizer, full_weights, shard_model

with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
path, out = sys.argv[1], sys.argv[2]
plain = shard_model(AutoModelForCausalLM.from_pretrained(path), None, "cpu", 1)  # one CPU rank: unsharded
optimizer, scheduler = build_optimizer(plain, ActorConfig().optim)
plain(input_ids=torch.tensor([[5, 6, 7]])).logits.sum().backward()
optimizer.step()
save_checkpoint(out, plain, optimizer, scheduler)
sharded = AutoModelForCausalLM.from_pretrained(path)
for block in sharded.model.layers:  # as shard_model wraps a model over several ranks
    fully_shard(block)
fully_shard(sharded)
optimizer2, scheduler2 = build_optimizer(sharded, ActorConfig().optim)
load_checkpoint(out, sharded, optimizer2, scheduler2)
gathered = dict(full_weights(sharded))
assert all(torch.equal(v, gathered[k]) for k, v in plain.state_dict().items())
assert len(optimizer2.state) == len(optimizer.state) > 0
for before, after in zip(plain.parameters(), sharded.parameters(), strict=True):
    for name in ("exp_avg", "exp_avg_sq"):
        assert torch.equal(optimizer.state[before][name], optimizer2.state[after][name].full_tensor())
print("RESHARDED")
"""


def test_a_single_cpu_rank_checkpoint_resumes_into_a_sharded_model(tmp_path):
    """One CPU rank trains the plain module; its checkpoint still loads into FSDP2 shards."""
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT
    from verl.utils.tiny_model import build_tiny_model

    path = build_tiny_model(tmp_path / "m", vocab_size=300, hidden_size=32, intermediate_size=64)
    run = subprocess.run(
        [sys.executable, "-c", RESHARD, str(path), str(tmp_path / "ckpt")],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": REPO_ROOT},
    )
    assert run.returncode == 0 and "RESHARDED" in run.stdout, run.stderr[-3000:]


RESHARD_2_TO_3 = """
import os, socket, sys, torch, torch.distributed as dist, torch.multiprocessing as mp
from verl.config import OptimConfig
from verl.utils.checkpoint import load_checkpoint, save_checkpoint
from verl.utils.fsdp_utils import build_optimizer, full_weights, shard_model
from verl.workers.fsdp_workers import load_causal_lm

def run(rank, world, path, out, port, save):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    torch.manual_seed(100 + rank)
    model = shard_model(load_causal_lm(path, False, weights=rank == 0), None, "cpu", world)
    optimizer, scheduler = build_optimizer(model, OptimConfig(lr=1e-2, lr_warmup_steps=10))
    if save:
        for _ in range(2):
            model(input_ids=torch.tensor([[5 + rank, 6, 7]])).logits.logsumexp(-1).sum().backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
        save_checkpoint(out, model, optimizer, scheduler)
    else:
        load_checkpoint(out, model, optimizer, scheduler)
    weights = {k: v.clone() for k, v in full_weights(model)}
    moments = [optimizer.state[p]["exp_avg"].full_tensor() for p in model.parameters()]
    if rank == 0:
        torch.save({"weights": weights, "moments": moments, "lr": scheduler.get_last_lr()}, f"{out}.{world}.pt")
    dist.destroy_process_group()

if __name__ == "__main__":
    path, out, world = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(run, args=(world, path, out, port, world == 2), nprocs=world)
"""


def test_a_checkpoint_of_2_ranks_loads_into_3(tmp_path):
    """DCP reshards the weights and the optimizer moments; the LR schedule carries over, and the
    third rank, which has no saved RNG state, keeps its own seed rather than failing alone."""
    import subprocess
    import sys

    import torch

    from tests.conftest import REPO_ROOT
    from verl.utils.tiny_model import build_tiny_model

    path = build_tiny_model(tmp_path / "m", vocab_size=300, hidden_size=32, intermediate_size=64)
    script = tmp_path / "reshard.py"
    script.write_text(RESHARD_2_TO_3)
    out = tmp_path / "ckpt"
    for world in (2, 3):
        run = subprocess.run(
            [sys.executable, str(script), str(path), str(out), str(world)],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "PYTHONPATH": REPO_ROOT},
        )
        assert run.returncode == 0, run.stderr[-3000:]
    saved, loaded = torch.load(f"{out}.2.pt"), torch.load(f"{out}.3.pt")
    assert saved["weights"].keys() == loaded["weights"].keys()
    assert all(torch.equal(v, loaded["weights"][k]) for k, v in saved["weights"].items())
    assert all(torch.equal(a, b) for a, b in zip(saved["moments"], loaded["moments"], strict=True))
    assert loaded["lr"] == saved["lr"] == [pytest.approx(1e-2 * 2 / 10)]


def test_a_torn_save_is_refused_on_every_rank(tmp_path):
    """A missing rank file fails every rank before the collective load (no rank waits for another)."""
    for rank in (0, 2):
        (tmp_path / f"extra_state_rank_{rank}.pt").write_bytes(b"")
    from verl.utils.checkpoint import load_checkpoint

    with pytest.raises(FileNotFoundError, match=r"extra_state_rank_\*.pt of ranks \[0, 2\], not 0..N-1"):
        load_checkpoint(str(tmp_path), model=None)
