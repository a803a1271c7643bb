from verl.single_controller.decorator import Dispatch, register
from verl.single_controller.ray_worker_group import (
    RayClassWithInitArgs,
    RayResourcePool,
    RayWorkerGroup,
    create_colocated_worker_cls,
)
from verl.single_controller.worker import Worker

__all__ = [
    "Dispatch",
    "register",
    "Worker",
    "RayWorkerGroup",
    "RayResourcePool",
    "RayClassWithInitArgs",
    "create_colocated_worker_cls",
]
