"""Ray resource pools and worker groups: the driver's handle on a set of worker processes."""

import logging
import os
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import ray
from ray.util.placement_group import placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from verl.single_controller.decorator import DISPATCH_ATTR, collect_from_ranks, split_for_ranks
from verl.single_controller.worker import LOG_FILE_ENV, Worker

LOG_TAIL_LINES = 40
logger = logging.getLogger(__name__)


def cpus_per_rank(process_on_nodes: list[int]) -> int:
    """CPUs each rank of a CPU-only pool can hold: the smallest node's CPUs shared by its ranks."""
    # nodes without CPUs (a head started with --num-cpus=0) host no workers
    node_cpus = [node["Resources"].get("CPU", 0) for node in ray.nodes() if node["Alive"]]
    return max(1, int(min((c for c in node_cpus if c > 0), default=1)) // max(process_on_nodes))


class RayResourcePool:
    """One placement group per node, one bundle per rank: 1 CPU and 1 GPU when ``use_gpu``, else
    ``cpus`` CPUs (default: the node's CPUs shared by its ranks), which the rank's workers use as
    their intra-op threads.

    ``max_colocate_count`` worker groups may share each bundle (each takes a fraction of it)."""

    def __init__(
        self,
        process_on_nodes: list[int],
        use_gpu: bool,
        max_colocate_count: int = 1,
        ready_timeout_s: float = 120.0,
        cpus: int | None = None,
    ):
        self.process_on_nodes = process_on_nodes
        self.use_gpu = use_gpu
        self.max_colocate_count = max_colocate_count
        self.cpus = 1 if use_gpu else (cpus or cpus_per_rank(process_on_nodes))
        bundle = {"CPU": 1, "GPU": 1} if use_gpu else {"CPU": self.cpus}
        self.placement_groups = [placement_group([dict(bundle)] * n, strategy="STRICT_PACK") for n in process_on_nodes]
        ready, _ = ray.wait(
            [pg.ready() for pg in self.placement_groups],
            num_returns=len(self.placement_groups),
            timeout=ready_timeout_s,
        )
        if len(ready) < len(self.placement_groups):
            self.release()
            raise RuntimeError(
                f"could not reserve {process_on_nodes} worker slots of {bundle} per node within "
                f"{ready_timeout_s:.0f}s; the Ray cluster has {ray.cluster_resources()}. Lower "
                "trainer.n_gpus_per_node / trainer.nnodes or add nodes."
            )

    @property
    def world_size(self) -> int:
        return sum(self.process_on_nodes)

    @property
    def single_node(self) -> bool:
        return len(self.process_on_nodes) == 1  # one STRICT_PACK placement group: one node

    def release(self) -> None:
        """Frees the reserved slots (after the workers are gone) for later pools in this Ray session."""
        for pg in self.placement_groups:
            ray.util.remove_placement_group(pg)

    def slots(self):
        """(placement group, bundle index) for every rank, rank order."""
        for pg, n in zip(self.placement_groups, self.process_on_nodes, strict=True):
            for i in range(n):
                yield pg, i


def _failed(future: ray.ObjectRef) -> bool:
    try:
        ray.get(future)
    except ray.exceptions.RayError:
        return True
    return False


@dataclass
class RayClassWithInitArgs:
    cls: type
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)


def _dispatched_methods(cls: type) -> dict[str, Any]:
    return {
        name: getattr(getattr(cls, name), DISPATCH_ATTR)
        for name in dir(cls)
        if hasattr(getattr(cls, name, None), DISPATCH_ATTR)
    }


def create_colocated_worker_cls(roles: dict[str, RayClassWithInitArgs]) -> RayClassWithInitArgs:
    """A worker class that hosts one instance per role in a single process.

    Each role's method ``m`` becomes ``<role>__m`` on the fused class; ``RayWorkerGroup.spawn``
    gives back one group per role with the plain names."""

    def __init__(self):
        Worker.__init__(self)
        self.role_workers = {role: spec.cls(*spec.args, **spec.kwargs) for role, spec in roles.items()}

    attrs: dict[str, Any] = {"__init__": __init__}
    for role, spec in roles.items():
        for name, mode in _dispatched_methods(spec.cls).items():

            def forward(self, *args, _role=role, _name=name, **kwargs):
                return getattr(self.role_workers[_role], _name)(*args, **kwargs)

            setattr(forward, DISPATCH_ATTR, mode)
            attrs[f"{role}__{name}"] = forward
    fused = type("ColocatedWorker_" + "_".join(roles), (Worker,), attrs)
    return RayClassWithInitArgs(fused)


class RayWorkerGroup:
    """Driver-side group of Ray actors, one per rank of a resource pool.

    Every ``@register``-ed method of the worker class is bound on the group: calling it dispatches
    to all ranks, waits, and collects according to the method's dispatch mode.

    With ``log_dir``, rank k's stdout and stderr go to ``<log_dir>/<name>_rank<k>.log`` (``name``:
    the worker class's), not to Ray's log stream; when a call fails, the error carries the tail of
    the failing rank's file."""

    def __init__(
        self,
        resource_pool: RayResourcePool,
        ray_cls_with_init: RayClassWithInitArgs,
        device: str,
        env_vars: dict[str, str] | None = None,
        log_dir: str | None = None,
        name: str | None = None,
        _workers: list | None = None,
        _log_files: list[str] | None = None,
        _method_prefix: str = "",
    ):
        self.resource_pool = resource_pool
        self.cls = ray_cls_with_init.cls
        self.world_size = resource_pool.world_size
        self.device = device
        name = name or self.cls.__name__
        self.log_files = _log_files or (
            [os.path.join(log_dir, f"{name}_rank{rank}.log") for rank in range(self.world_size)] if log_dir else []
        )
        self._workers = _workers if _workers is not None else self._create_workers(ray_cls_with_init, env_vars or {})
        for remote_name, mode in _dispatched_methods(self.cls).items():
            if remote_name.startswith(_method_prefix):
                self._bind(remote_name[len(_method_prefix) :], remote_name, mode)

        if _workers is None:
            host, port = self.get_rendezvous_address(loopback=resource_pool.single_node)
            self.init_distributed(host, port)

    if TYPE_CHECKING:  # the worker class's @register-ed methods, bound on each instance

        def __getattr__(self, name: str) -> Callable[..., Any]: ...

    def _create_workers(self, spec: RayClassWithInitArgs, env_vars: dict[str, str]) -> list:
        pool = self.resource_pool
        share = 1.0 / pool.max_colocate_count
        remote_cls: Any = ray.remote(spec.cls)
        workers = []
        for rank, (pg, bundle_index) in enumerate(pool.slots()):
            env = {
                **env_vars,
                "RANK": str(rank),
                "WORLD_SIZE": str(self.world_size),
                "VERL_DEVICE": self.device,
                # Ray would set 1 for a fractional share; colocated groups take turns on the same CPUs
                "OMP_NUM_THREADS": str(pool.cpus),
            }
            if self.log_files:
                env[LOG_FILE_ENV] = self.log_files[rank]
            options = dict(
                scheduling_strategy=PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=bundle_index),
                num_cpus=share * pool.cpus,
                num_gpus=share if pool.use_gpu else 0,
                runtime_env={"env_vars": env},
            )
            workers.append(remote_cls.options(**options).remote(*spec.args, **spec.kwargs))
        return workers

    def _bind(self, name: str, remote_name: str, mode) -> None:
        def call(*args, **kwargs):
            rank_args, rank_kwargs, context = split_for_ranks(mode, self.world_size, args, kwargs)
            workers = self._workers[: len(rank_args)]  # RANK_ZERO calls the first worker only
            futures = [
                getattr(worker, remote_name).remote(*a, **k)
                for worker, a, k in zip(workers, rank_args, rank_kwargs, strict=True)
            ]
            try:
                results = ray.get(futures)
            except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as error:
                self._add_log_tail(error, futures)
                raise
            return collect_from_ranks(mode, results, context)

        call.__name__ = name
        setattr(self, name, call)

    def _add_log_tail(self, error: Exception, futures: list) -> None:
        """Adds the last lines of the failing rank's log file to ``error``: a worker that died
        (killed, out of memory, a crash in C) leaves no Python traceback, only what it printed."""
        if not self.log_files:
            return
        ready, _ = ray.wait(futures, num_returns=len(futures), timeout=0)
        rank = next((rank for rank, future in enumerate(futures) if future in ready and _failed(future)), None)
        if rank is None:
            return
        path = self.log_files[rank]
        try:
            with open(path, errors="replace") as f:
                note = f"last lines of rank {rank}'s output ({path}):\n" + "".join(deque(f, maxlen=LOG_TAIL_LINES))
        except OSError:  # on another node's disk
            note = f"rank {rank}'s output: {path} (on its node)"
        if sys.version_info >= (3, 11):
            error.add_note(note)  # printed with the traceback
        else:
            logger.error(note)

    def spawn(self, roles) -> dict[str, "RayWorkerGroup"]:
        """One group per role of a colocated worker class, sharing these actors."""
        return {
            role: RayWorkerGroup(
                self.resource_pool,
                RayClassWithInitArgs(self.cls),
                self.device,
                _workers=self._workers,
                _log_files=self.log_files,
                _method_prefix=f"{role}__",
            )
            for role in roles
        }

    def shutdown(self) -> None:
        for worker in self._workers:
            ray.kill(worker)
