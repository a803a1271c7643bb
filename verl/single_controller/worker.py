"""Base class of every Ray worker: rank, world size, where its output goes and the
torch.distributed rendezvous."""

import os
import socket
import sys
import time
from datetime import timedelta

import torch
import torch.distributed as dist

from verl.single_controller.decorator import Dispatch, register

# Set by the worker group: the file this worker's stdout and stderr go to.
LOG_FILE_ENV = "VERL_WORKER_LOG_FILE"
_output_file: str | None = None


def send_output_to(path: str) -> None:
    """Points this process's stdout and stderr at ``path`` (appended, created with its folder). The
    file descriptors themselves are redirected, so C libraries and child processes (vLLM's engine
    core) write there too, and nothing of the worker's reaches the driver's output. Once per
    process: colocated roles share it."""
    global _output_file
    if _output_file == path:
        return
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    for stream in (sys.stdout, sys.stderr):  # lines reach the file before a crash can lose them
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(line_buffering=True)
    _output_file = path
    print(f"== {time.strftime('%Y-%m-%d %H:%M:%S')} pid {os.getpid()} ==", flush=True)


class Worker:
    """A process in a worker group. The group sets ``RANK``/``WORLD_SIZE`` (and the log file, if
    any) in the environment of the Ray actor; the rendezvous address is the Ray node address of
    rank 0."""

    def __init__(self):
        if LOG_FILE_ENV in os.environ:
            send_output_to(os.environ[LOG_FILE_ENV])
        self.rank = int(os.environ["RANK"])
        self.world_size = int(os.environ["WORLD_SIZE"])
        self.device = os.environ.get("VERL_DEVICE", "cpu")
        if "OMP_NUM_THREADS" in os.environ:  # the CPUs this rank holds (torch may have read it earlier)
            torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

    @register(Dispatch.RANK_ZERO)
    def get_rendezvous_address(self, loopback: bool) -> tuple[str, int]:
        """Rank 0's Ray node address and a free port there; loopback when every rank is on this
        node, so single-node runs never leave the machine's loopback interface."""
        import ray  # a worker built outside Ray (a one-GPU check) never asks for its node address

        host = "127.0.0.1" if loopback else ray.util.get_node_ip_address()
        with socket.socket() as s:
            s.bind((host, 0))  # port 0: the OS picks a free one
            return host, s.getsockname()[1]

    @register(Dispatch.ONE_TO_ALL)
    def init_distributed(self, host: str, port: int, timeout_s: int = 600) -> None:
        """Joins the process group once per process (colocated roles share it)."""
        if dist.is_initialized():
            return
        # On GPU, CPU tensors (metrics, offloaded gradients) still need a backend: gloo carries them.
        backend = "cpu:gloo,cuda:nccl" if self.device == "cuda" else "gloo"
        if self.device == "cuda":
            torch.cuda.set_device(0)  # Ray exposes exactly the actor's GPU as device 0
        dist.init_process_group(
            backend,
            init_method=f"tcp://{host}:{port}",
            rank=self.rank,
            world_size=self.world_size,
            timeout=timedelta(seconds=timeout_s),
        )
