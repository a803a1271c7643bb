import json
import os
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch

from verl.utils.tracking import Tracking


def read_lines(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_file_backend_appends_across_runs(tmp_path):
    local_dir = tmp_path / "logs" / "run"
    first = Tracking("proj", "exp", ["file"], {}, str(local_dir))
    first.log({"actor/pg_loss": torch.tensor(0.5), "critic/score": np.float32(0.25), "n": 3, "note": "ok"}, step=1)
    first.log({"actor/pg_loss": 0.4, "obj": object()}, step=2)
    first.finish()

    resumed = Tracking("proj", "exp", ["file"], {}, str(local_dir))
    resumed.log({"actor/pg_loss": np.float64(0.3)}, step=3)
    resumed.finish()

    lines = read_lines(local_dir / "metrics.jsonl")
    assert lines == [
        {"step": 1, "actor/pg_loss": 0.5, "critic/score": 0.25, "n": 3.0, "note": "ok"},
        {"step": 2, "actor/pg_loss": 0.4},
        {"step": 3, "actor/pg_loss": 0.3},
    ]


def test_a_resumed_run_keeps_one_line_per_step_and_loses_nothing(tmp_path):
    crashed = Tracking("proj", "exp", ["file"], {}, str(tmp_path))
    for step in range(5):  # it saved at step 2, logged up to 4, then died
        crashed.log({"loss": float(step)}, step=step)
    resumed = Tracking("proj", "exp", ["file", "console"], {}, str(tmp_path))
    resumed.start_at(3)
    for step in (3, 4):
        resumed.log({"loss": step + 0.5}, step=step)
    resumed.finish()
    assert read_lines(tmp_path / "metrics.jsonl") == [
        {"step": 0, "loss": 0.0},
        {"step": 1, "loss": 1.0},
        {"step": 2, "loss": 2.0},
        {"step": 3, "loss": 3.5},
        {"step": 4, "loss": 4.5},
    ]
    assert read_lines(tmp_path / "metrics.superseded.jsonl") == [{"step": 3, "loss": 3.0}, {"step": 4, "loss": 4.0}]
    fresh = Tracking("proj", "exp", ["file"], {}, str(tmp_path))
    fresh.start_at(0)  # no checkpoint: a new run; the old lines are set aside, not deleted
    fresh.finish()
    assert (tmp_path / "metrics.jsonl").read_text() == ""
    assert len(read_lines(tmp_path / "metrics.superseded.jsonl")) == 2 + 5


def test_file_is_flushed_every_step(tmp_path):
    tracker = Tracking("proj", "exp", ["file"], {}, str(tmp_path))
    tracker.log({"a": 1.0}, step=7)
    assert read_lines(tmp_path / "metrics.jsonl") == [{"step": 7, "a": 1.0}]
    tracker.finish()


def test_console_line(tmp_path, capsys):
    tracker = Tracking("proj", "exp", ["console"], {}, str(tmp_path))
    tracker.log({"actor/pg_loss": 0.123456, "response_length/max": 1024, "lr": torch.tensor(1e-6)}, step=3)
    tracker.finish()
    assert capsys.readouterr().out == "step 3 | actor/pg_loss 0.1235 | response_length/max 1024 | lr 1e-06\n"


def test_tensorboard_writes_events(tmp_path, monkeypatch):
    monkeypatch.delenv("TENSORBOARD_DIR", raising=False)
    tracker = Tracking("proj", "exp", ["tensorboard"], {}, str(tmp_path))
    tracker.log({"actor/pg_loss": torch.tensor(0.5), "note": "skipped"}, step=1)
    tracker.finish()
    events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1 and events[0].stat().st_size > 0


def test_tensorboard_dir_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("TENSORBOARD_DIR", str(tmp_path / "tb_env"))
    tracker = Tracking("proj", "exp", ["tensorboard"], {}, str(tmp_path / "local"))
    tracker.log({"x": 1.0}, step=0)
    tracker.finish()
    assert list((tmp_path / "tb_env").glob("events.out.tfevents.*"))


def test_wandb_offline(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="wandb is not installed (pip install criticsearch[wandb])")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_ERROR_REPORTING", "false")  # restored afterwards: the tracker would set it
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    tracker = Tracking("proj", "exp", ["wandb"], {"lr": 1e-6}, str(tmp_path))
    tracker.log({"actor/pg_loss": torch.tensor(0.5), "n": np.int64(2)}, step=1)
    tracker.finish()
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))


def test_unknown_backend(tmp_path):
    with pytest.raises(ValueError, match=r"\['mlflow'\].*'console', 'file', 'wandb', 'tensorboard'"):
        Tracking("proj", "exp", ["console", "mlflow"], {}, str(tmp_path))


def test_wandb_defaults_to_offline_without_credentials(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb", reason="wandb is not installed (pip install criticsearch[wandb])")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_ERROR_REPORTING", "false")  # restored afterwards: the tracker would set it
    calls = []
    monkeypatch.setattr(wandb, "init", lambda **kwargs: calls.append(kwargs))
    Tracking("proj", "exp", ["wandb"], {"lr": 1e-6}, str(tmp_path))
    assert calls == [
        {"project": "proj", "name": "exp", "config": {"lr": 1e-6}, "dir": str(tmp_path), "mode": "offline"}
    ]


OFFLINE_RUN = """
import sys
from verl.utils.tracking import Tracking
tracker = Tracking("proj", "exp", ["wandb"], {"lr": 1e-6}, sys.argv[1])
tracker.log({"x": 1.0}, step=1)
tracker.finish()
"""


@pytest.mark.parametrize("mode", ["auto", "offline"])
def test_wandb_offline_opens_no_connection(tmp_path, mode):
    """Every proxy variable points at a loopback listener that records each connection attempt;
    an offline run (chosen for lack of credentials, or asked for) must make none."""
    pytest.importorskip("wandb", reason="wandb is not installed (pip install criticsearch[wandb])")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.2)
    attempts: list[bytes] = []
    done = threading.Event()

    def record():
        while not done.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(2)
                attempts.append(conn.recv(200))

    thread = threading.Thread(target=record, daemon=True)
    thread.start()
    proxy = f"http://127.0.0.1:{listener.getsockname()[1]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_") and k.lower() != "no_proxy"}
    env.update({name: proxy for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy")})
    if mode == "offline":
        env["WANDB_MODE"] = "offline"
    run = subprocess.run(
        [sys.executable, "-c", OFFLINE_RUN, str(tmp_path)], env=env, capture_output=True, text=True, timeout=300
    )
    time.sleep(1)  # a late connection from wandb's service process would arrive here
    done.set()
    thread.join()
    listener.close()
    assert run.returncode == 0, run.stderr[-3000:]
    assert list((tmp_path / "wandb").glob("offline-run-*"))
    assert attempts == []
