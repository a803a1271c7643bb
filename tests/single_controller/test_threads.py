"""Workers on CPU get the cores they hold as intra-op threads, and run at normal priority."""

import json
import os
import subprocess
import sys

from tests.conftest import REPO_ROOT

PROBE = """
import json, os, ray, torch
from verl.single_controller import Dispatch, RayClassWithInitArgs, RayResourcePool, RayWorkerGroup, Worker, register
from verl.config import RayInitConfig
from verl.trainer.startup import init_ray

class Probe(Worker):
    @register(Dispatch.ONE_TO_ALL)
    def probe(self):
        return {"threads": torch.get_num_threads(), "nice": os.nice(0)}

init_ray(RayInitConfig(num_cpus=2))
out = {}
for ranks in (1, 2):
    pool = RayResourcePool([ranks], use_gpu=False)
    group = RayWorkerGroup(pool, RayClassWithInitArgs(Probe), device="cpu")
    out[ranks] = group.probe()
    group.shutdown()
    pool.release()
print("PROBE " + json.dumps(out))
"""


def test_cpu_workers_share_the_cores_and_are_not_niced():
    env = {**os.environ, "PYTHONPATH": REPO_ROOT}
    env.pop("RAY_worker_niceness", None)
    env.pop("OMP_NUM_THREADS", None)
    run = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=300, cwd=REPO_ROOT
    )
    assert run.returncode == 0, run.stderr[-3000:]
    line = next(ln for ln in run.stdout.splitlines() if ln.startswith("PROBE "))
    out = json.loads(line.removeprefix("PROBE "))
    assert out["1"] == [{"threads": 2, "nice": 0}]  # one rank holds both cores
    assert out["2"] == [{"threads": 1, "nice": 0}] * 2  # two ranks: one core each
