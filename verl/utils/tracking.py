"""Send per-step training metrics to one or more backends: console, file, wandb, tensorboard."""

import json
import numbers
import os
import typing
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch


def _as_float(value) -> float | None:
    """A float for python/numpy numbers and single-element tensors/arrays; None otherwise."""
    if isinstance(value, torch.Tensor):
        return float(value.item()) if value.numel() == 1 else None
    if isinstance(value, np.ndarray):
        return float(value.item()) if value.size == 1 else None
    if isinstance(value, (numbers.Real, np.bool_)):
        return float(value)
    return None


def _is_json(value) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


class _Backend(Protocol):
    def log(self, data: dict[str, Any], step: int) -> None: ...

    def finish(self) -> None: ...


class _Console:
    def log(self, data: dict, step: int) -> None:
        parts = [f"step {step}"]
        for key, value in data.items():
            number = _as_float(value)
            if isinstance(value, numbers.Integral) and not isinstance(value, bool):
                text = str(int(value))
            elif number is not None:
                text = f"{number:.4g}"
            else:
                text = str(value)
            parts.append(f"{key} {text}")
        print(" | ".join(parts), flush=True)

    def finish(self) -> None:
        pass


def _step_of(line: str) -> float:
    """The step of a metrics line; a line that is not a record with a step sorts first (kept)."""
    try:
        step = json.loads(line).get("step")
    except (ValueError, AttributeError):
        return float("-inf")
    return step if isinstance(step, int) else float("-inf")


class _File:
    def __init__(self, local_dir: str):
        Path(local_dir).mkdir(parents=True, exist_ok=True)
        self.path = Path(local_dir) / "metrics.jsonl"
        # Append so a resumed run keeps the lines it wrote before.
        self.handle = open(self.path, "a", encoding="utf-8")

    def start_at(self, step: int) -> None:
        """Lines of ``step`` and later, written by an earlier attempt past its last checkpoint, are
        moved to metrics.superseded.jsonl (kept, never lost): one line per step stays, this run's."""
        self.handle.close()
        lines = self.path.read_text(encoding="utf-8").splitlines(keepends=True)
        late = [_step_of(line) >= step for line in lines]
        if any(late):
            with open(self.path.with_name("metrics.superseded.jsonl"), "a", encoding="utf-8") as f:
                f.writelines(line for line, stale in zip(lines, late, strict=True) if stale)
            partial = self.path.with_name("metrics.jsonl.tmp")
            partial.write_text("".join(line for line, stale in zip(lines, late, strict=True) if not stale), "utf-8")
            os.replace(partial, self.path)
        self.handle = open(self.path, "a", encoding="utf-8")

    def log(self, data: dict, step: int) -> None:
        record: dict[str, Any] = {"step": step}
        for key, value in data.items():
            number = _as_float(value)
            if number is not None:
                record[key] = number
            elif _is_json(value):
                record[key] = value
        self.handle.write(json.dumps(record) + "\n")
        self.handle.flush()

    def finish(self) -> None:
        self.handle.close()


class _Wandb:
    def __init__(self, project_name: str, experiment_name: str, config: dict, local_dir: str):
        # Without credentials or an explicit mode, log locally instead of prompting for a login.
        offline = not os.environ.get("WANDB_API_KEY") and "WANDB_MODE" not in os.environ
        if offline or os.environ.get("WANDB_MODE") in ("offline", "disabled"):
            # Offline means no network at all: wandb's error reporting would still open a connection.
            os.environ.setdefault("WANDB_ERROR_REPORTING", "false")
        try:
            import wandb
        except ImportError as err:
            raise ImportError("the 'wandb' tracking backend needs wandb: pip install criticsearch[wandb]") from err
        Path(local_dir).mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=project_name,
            name=experiment_name,
            config=config,
            dir=local_dir,
            mode="offline" if offline else None,
        )

    def log(self, data: dict, step: int) -> None:
        self.run.log({k: (n if (n := _as_float(v)) is not None else v) for k, v in data.items()}, step=step)

    def finish(self) -> None:
        self.run.finish()


class _TensorBoard:
    def __init__(self, local_dir: str):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            raise ImportError(
                "the 'tensorboard' tracking backend needs tensorboard: pip install criticsearch[tensorboard]"
            ) from err
        self.writer = SummaryWriter(os.environ.get("TENSORBOARD_DIR") or str(Path(local_dir) / "tensorboard"))

    def log(self, data: dict, step: int) -> None:
        for key, value in data.items():
            number = _as_float(value)
            if number is not None:
                self.writer.add_scalar(key, number, step)

    def finish(self) -> None:
        self.writer.close()


BACKENDS = ("console", "file", "wandb", "tensorboard")


def plain_config(config: Any) -> dict[str, Any]:
    """A config dataclass as plain nested dicts (interpolations resolved), for the loggers."""
    from omegaconf import OmegaConf

    return typing.cast(dict[str, Any], OmegaConf.to_container(OmegaConf.structured(config), resolve=True))


class Tracking:
    def __init__(self, project_name: str, experiment_name: str, backends: list[str], config: dict, local_dir: str):
        unknown = [name for name in backends if name not in BACKENDS]
        if unknown:
            raise ValueError(f"Tracking: unknown backend(s) {unknown}; known backends are {list(BACKENDS)}")
        self.backends: list[_Backend] = []
        for name in dict.fromkeys(backends):
            if name == "console":
                self.backends.append(_Console())
            elif name == "file":
                self.backends.append(_File(local_dir))
            elif name == "wandb":
                self.backends.append(_Wandb(project_name, experiment_name, config, local_dir))
            else:
                self.backends.append(_TensorBoard(local_dir))

    def log(self, data: dict, step: int) -> None:
        for backend in self.backends:
            backend.log(data, step)

    def start_at(self, step: int) -> None:
        """The run logs from ``step`` on (0 fresh, N + 1 resumed from step N): the file backend sets
        aside what an earlier attempt logged from there, so no step appears twice."""
        for backend in self.backends:
            if isinstance(backend, _File):
                backend.start_at(step)

    def finish(self) -> None:
        for backend in self.backends:
            backend.finish()
