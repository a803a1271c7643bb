"""Workers' output goes to the run's log files, never into the driver's stream, and a failing
worker's error still reaches the driver with what it printed."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT
from verl.single_controller import Dispatch, RayClassWithInitArgs, RayResourcePool, RayWorkerGroup, Worker, register

# A driver whose worker keeps printing after the driver has written its result and its last line:
# the race that made a test read a worker's log line as the driver's output.
LATE_WORKER = """
import json, os, subprocess, sys, threading, time
from verl.single_controller import Dispatch, RayClassWithInitArgs, RayResourcePool, RayWorkerGroup, Worker, register
from verl.config import RayInitConfig
from verl.trainer.startup import init_ray

class Chatty(Worker):
    @register(Dispatch.ONE_TO_ALL)
    def work(self):
        print("chatty stdout line", flush=True)
        os.write(2, b"chatty fd2 line\\n")  # what C code (vLLM's engine) writes
        subprocess.run(["echo", "chatty child line"], check=True)  # a child process (vLLM's engine core)

        def late():
            time.sleep(1.0)
            print("chatty late line", flush=True)

        threading.Thread(target=late).start()
        return self.rank

out, log_to_driver = sys.argv[1], sys.argv[2] == "true"
init_ray(RayInitConfig(num_cpus=2, log_to_driver=log_to_driver))
pool = RayResourcePool([2], use_gpu=False)
log_dir = None if log_to_driver else os.path.join(out, "logs")
group = RayWorkerGroup(pool, RayClassWithInitArgs(Chatty), "cpu", log_dir=log_dir, name="chatty")
with open(os.path.join(out, "result.json"), "w") as f:
    json.dump(group.work(), f)
print("driver done", flush=True)
time.sleep(6)  # the workers' late lines are written while the driver is still alive
"""


def run_driver(out, log_to_driver: bool) -> subprocess.CompletedProcess:
    run = subprocess.run(
        [sys.executable, "-c", LATE_WORKER, str(out), str(log_to_driver).lower()],
        env={**os.environ, "PYTHONPATH": REPO_ROOT},
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO_ROOT,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert json.loads((out / "result.json").read_text()) == [0, 1]
    return run


def test_a_worker_that_logs_after_the_driver_changes_nothing_the_driver_prints(tmp_path):
    run = run_driver(tmp_path, log_to_driver=False)
    assert "chatty" not in run.stdout + run.stderr  # no line of any worker reached the driver
    assert run.stdout.splitlines() == ["driver done"]
    for rank in (0, 1):
        lines = (tmp_path / "logs" / f"chatty_rank{rank}.log").read_text().splitlines()
        assert lines[0].startswith("== ") and "pid " in lines[0]
        for line in ("chatty stdout line", "chatty fd2 line", "chatty child line", "chatty late line"):
            assert line in lines, (rank, lines)


def test_log_to_driver_streams_the_workers_output_live(tmp_path):
    """The debugging switch: Ray's own stream to the driver's terminal, no log files."""
    run = run_driver(tmp_path, log_to_driver=True)
    assert "chatty stdout line" in run.stdout + run.stderr
    assert not (tmp_path / "logs").exists()


class Failing(Worker):
    @register(Dispatch.ONE_TO_ALL)
    def raise_error(self):
        if self.rank == 1:
            raise ValueError("rank one cannot go on")
        return self.rank

    @register(Dispatch.ONE_TO_ALL)
    def die(self):
        if self.rank == 1:
            print("the last words of rank one", flush=True)
            os._exit(3)
        return self.rank


@pytest.fixture
def failing_group(ray_local, tmp_path):
    pool = RayResourcePool([2], use_gpu=False)
    group = RayWorkerGroup(pool, RayClassWithInitArgs(Failing), "cpu", log_dir=str(tmp_path), name="failing")
    yield group
    group.shutdown()
    pool.release()


def test_a_worker_exception_reaches_the_driver_with_its_traceback(failing_group, tmp_path):
    with pytest.raises(ValueError, match="rank one cannot go on") as caught:
        failing_group.raise_error()
    assert "raise_error" in str(caught.value)  # the worker's traceback
    assert "failing_rank1.log" in "\n".join(caught.value.__notes__)


def test_a_worker_that_dies_leaves_its_last_lines_in_the_driver_error(failing_group, tmp_path):
    import ray

    with pytest.raises(ray.exceptions.RayActorError) as caught:
        failing_group.die()
    notes = "\n".join(caught.value.__notes__)
    assert "rank 1" in notes and "the last words of rank one" in notes
    assert "the last words of rank one" in (tmp_path / "failing_rank1.log").read_text()
