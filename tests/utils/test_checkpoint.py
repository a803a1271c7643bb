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
