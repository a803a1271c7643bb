"""The simulator launch scripts check their KEY VALUE arguments and build the server command.
Stand-ins for `python` and `vllm` print their arguments, so no server starts."""

import os
import subprocess

import pytest

from tests.conftest import REPO_ROOT

SCRIPTS = {
    "sglang": os.path.join(REPO_ROOT, "scripts", "launch_simulator_sglang.sh"),
    "vllm": os.path.join(REPO_ROOT, "scripts", "launch_simulator_vllm.sh"),
}
VALID_KEYS = "valid keys: MODEL_PATH PORT TP GPU_MEMORY SERVED_NAME HOST"


@pytest.fixture
def fake_bin(tmp_path):
    for name in ("python", "vllm"):
        path = tmp_path / name
        path.write_text('#!/bin/sh\necho "$(basename "$0") $*"\n')
        path.chmod(0o755)
    return str(tmp_path)


def launch(server, *args, path_prefix):
    env = {**os.environ, "PATH": path_prefix + os.pathsep + os.environ["PATH"]}
    return subprocess.run(
        ["bash", SCRIPTS[server], *args], env=env, capture_output=True, text=True, timeout=30, check=False
    )


@pytest.mark.parametrize("server", SCRIPTS)
@pytest.mark.parametrize(
    "args, message",
    [
        (["MODEL_PATH", "/m", "BATCH", "8"], "unknown key 'BATCH'"),
        (["--help"], "unknown key '--help'"),
        (["--model-path", "/m"], "unknown key '--model-path'"),
        (["MODEL_PATH", "/m", "PORT"], "key 'PORT' has no value"),
        (["PORT", "7000"], "MODEL_PATH is required"),
        (["MODEL_PATH", "/m", "TP", "two"], "TP must be a positive integer"),
        (["MODEL_PATH", "/m", "GPU_MEMORY", "80"], "GPU_MEMORY must be a fraction"),
    ],
)
def test_bad_arguments_exit_2_naming_the_keys(server, args, message, fake_bin):
    done = launch(server, *args, path_prefix=fake_bin)
    assert done.returncode == 2
    assert message in done.stderr and VALID_KEYS in done.stderr
    assert done.stdout == ""  # the server was never started


def test_sglang_command(fake_bin):
    done = launch(
        "sglang", "PORT", "7001", "MODEL_PATH", "/models/Qwen2.5-3B-Instruct", "TP", "2", path_prefix=fake_bin
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [
        "python",
        "-m",
        "sglang.launch_server",
        "--model-path",
        "/models/Qwen2.5-3B-Instruct",
        "--host",
        "0.0.0.0",
        "--port",
        "7001",
        "--tp-size",
        "2",
        "--mem-fraction-static",
        "0.8",
        "--served-model-name",
        "Qwen2.5-3B-Instruct",
    ]


def test_vllm_command_on_a_gpu(fake_bin):
    done = launch(
        "vllm",
        "MODEL_PATH",
        "Qwen/Qwen2.5-3B-Instruct",
        "GPU_MEMORY",
        "0.5",
        "SERVED_NAME",
        "sim",
        "HOST",
        "127.0.0.1",
        "DEVICE",
        "cuda",
        path_prefix=fake_bin,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [
        "python",
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        "Qwen/Qwen2.5-3B-Instruct",
        "--host",
        "127.0.0.1",
        "--port",
        "6001",
        "--tensor-parallel-size",
        "1",
        "--served-model-name",
        "sim",
        "--gpu-memory-utilization",
        "0.5",
    ]
    assert "http://127.0.0.1:6001/v1/chat/completions" in done.stderr


def test_vllm_command_on_a_cpu(fake_bin):
    """vLLM's CPU build: float32, eager, a KV cache of a given size (a GPU share means nothing there)."""
    done = launch(
        "vllm", "MODEL_PATH", "/m", "DEVICE", "cpu", "KV_CACHE", "256M", "MAX_MODEL_LEN", "512", path_prefix=fake_bin
    )
    assert done.returncode == 0, done.stderr
    words = done.stdout.split()
    assert words[:3] == ["python", "-m", "vllm.entrypoints.openai.api_server"]
    assert " ".join(words[3:]).endswith(
        "--dtype float32 --enforce-eager --kv-cache-memory-bytes 256M --max-model-len 512"
    )
    assert "--gpu-memory-utilization" not in words


@pytest.mark.parametrize(
    "args, message",
    [
        (["MODEL_PATH", "/m", "DEVICE", "tpu"], "DEVICE must be auto, cuda or cpu"),
        (["MODEL_PATH", "/m", "KV_CACHE", "lots"], "KV_CACHE must be a size"),
        (["MODEL_PATH", "/m", "MAX_MODEL_LEN", "0"], "MAX_MODEL_LEN must be a positive integer"),
    ],
)
def test_vllm_only_keys_are_checked(fake_bin, args, message):
    done = launch("vllm", *args, path_prefix=fake_bin)
    assert done.returncode == 2 and message in done.stderr and done.stdout == ""
    sglang = launch("sglang", "MODEL_PATH", "/m", "DEVICE", "cpu", path_prefix=fake_bin)
    assert sglang.returncode == 2 and "unknown key 'DEVICE'" in sglang.stderr


@pytest.mark.parametrize("server", SCRIPTS)
def test_critic_launchers_serve_on_the_critic_port_unless_told(server, fake_bin):
    critic = os.path.join(REPO_ROOT, "scripts", f"launch_critic_{server}.sh")
    env = {**os.environ, "PATH": fake_bin + os.pathsep + os.environ["PATH"]}

    def ports(*args):
        done = subprocess.run(["bash", critic, *args], env=env, capture_output=True, text=True, timeout=30, check=False)
        assert done.returncode == 0, done.stderr
        words = done.stdout.split()
        return words[words.index("--port") + 1]

    assert ports("MODEL_PATH", "/models/critic") == "6002"
    assert ports("MODEL_PATH", "/models/critic", "PORT", "7100") == "7100"
