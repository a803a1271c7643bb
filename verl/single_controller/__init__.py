"""The single controller: workers (``Worker``, ``register``) and, on the driver, the Ray side that
starts and calls them. The Ray side is imported when first used, so that a worker class can be
built and called in a process without Ray (a one-GPU check, a test)."""

from typing import TYPE_CHECKING, Any

from verl.single_controller.decorator import Dispatch, register
from verl.single_controller.worker import Worker

if TYPE_CHECKING:
    from verl.single_controller.ray_worker_group import (
        RayClassWithInitArgs,
        RayResourcePool,
        RayWorkerGroup,
        create_colocated_worker_cls,
    )

_RAY_SIDE = ("RayWorkerGroup", "RayResourcePool", "RayClassWithInitArgs", "create_colocated_worker_cls")

__all__ = [
    "Dispatch",
    "register",
    "Worker",
    "RayWorkerGroup",
    "RayResourcePool",
    "RayClassWithInitArgs",
    "create_colocated_worker_cls",
]


def __getattr__(name: str) -> Any:
    if name in _RAY_SIDE:
        from verl.single_controller import ray_worker_group

        return getattr(ray_worker_group, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
