"""The device check script (scripts/gpu_check.py): its worker checks run and pass on the CPU here,
so the script is sound the day a GPU runs it; on a GPU every check runs."""

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

SCRIPT = os.path.join(REPO_ROOT, "scripts", "gpu_check.py")


def run_check(tmp_path, *args: str) -> list[str]:
    proc = subprocess.run(
        [sys.executable, SCRIPT, "--out", str(tmp_path), *args],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": REPO_ROOT},
    )
    lines = [line for line in proc.stdout.splitlines() if line.split(" ")[0] in ("PASS", "FAIL", "SKIP")]
    assert proc.returncode == 0 and not [x for x in lines if x.startswith("FAIL")], proc.stdout + proc.stderr[-3000:]
    return lines


def test_the_worker_checks_pass_on_the_cpu(tmp_path):
    lines = run_check(tmp_path, "--device", "cpu", "--no-trainer")
    passed = {line.split(":")[0].removeprefix("PASS ") for line in lines if line.startswith("PASS")}
    for engine in ("hf", "vllm"):
        assert f"[{engine}] rollout log-probs = actor log-probs" in passed
        assert f"[{engine}] one actor update" in passed
    assert any(line.startswith("SKIP [hf] sleep releases device memory") for line in lines)  # GPU only


@pytest.mark.gpu
def test_every_check_passes_on_a_gpu(tmp_path):
    lines = run_check(tmp_path, "--device", "cuda", "--big")
    assert not any(line.startswith("SKIP param_offload") for line in lines)
