import pytest
import torch
import torch.distributed as dist

from verl.protocol import DataProto
from verl.single_controller import (
    Dispatch,
    RayClassWithInitArgs,
    RayResourcePool,
    RayWorkerGroup,
    Worker,
    create_colocated_worker_cls,
    register,
)


class EchoWorker(Worker):
    def __init__(self, offset: int):
        super().__init__()
        self.offset = offset

    @register(Dispatch.ONE_TO_ALL)
    def identity(self, x):
        return self.rank, self.world_size, x + self.offset

    @register(Dispatch.RANK_ZERO)
    def rank_zero(self):
        return self.rank

    @register(Dispatch.ONE_TO_ALL)
    def all_reduce(self, value: float) -> float:
        t = torch.tensor([value * (self.rank + 1)])
        dist.all_reduce(t)  # a real gloo collective between the worker processes
        return t.item()

    @register(Dispatch.DP_COMPUTE_PROTO)
    def double(self, data: DataProto) -> DataProto:
        rank = torch.full((len(data),), self.rank)
        return DataProto.from_dict(
            tensors={"y": data.batch["x"] * 2, "rank": rank}, non_tensors={"tag": data.non_tensor_batch["tag"]}
        )

    @register(Dispatch.DP_COMPUTE_PROTO)
    def expand(self, data: DataProto) -> DataProto:
        return data.repeat(3, interleave=True)


class OtherWorker(Worker):
    @register(Dispatch.ONE_TO_ALL)
    def identity(self, x):
        return ("other", self.rank, x)

    @register(Dispatch.ONE_TO_ALL)
    def is_initialized(self):
        return dist.is_initialized()


@pytest.fixture(scope="module")
def pool(ray_local):
    pool = RayResourcePool([2], use_gpu=False, max_colocate_count=2)
    yield pool
    pool.release()


@pytest.fixture(scope="module")
def echo_group(pool):
    group = RayWorkerGroup(pool, RayClassWithInitArgs(EchoWorker, (10,)), device="cpu")
    yield group
    group.shutdown()


def test_one_to_all_and_rank_zero(echo_group):
    assert echo_group.identity(1) == [(0, 2, 11), (1, 2, 11)]
    assert echo_group.rank_zero() == 0
    assert echo_group.all_reduce(1.0) == [3.0, 3.0]  # 1·1 + 1·2 on both ranks


@pytest.mark.parametrize("rows", [1, 2, 5])
def test_dp_compute_proto_splits_pads_and_concatenates(echo_group, rows):
    data = DataProto.from_dict(tensors={"x": torch.arange(rows)}, non_tensors={"tag": [f"r{i}" for i in range(rows)]})
    out = echo_group.double(data)
    assert out.batch["y"].tolist() == [2 * i for i in range(rows)]
    assert list(out.non_tensor_batch["tag"]) == [f"r{i}" for i in range(rows)]
    # every rank takes a share, padded rows included, so even one row reaches both ranks
    assert len(out) == rows


def test_dp_compute_proto_unpads_outputs_with_several_rows_per_input(echo_group):
    data = DataProto.from_dict(tensors={"x": torch.arange(3)})
    out = echo_group.expand(data)
    assert out.batch["x"].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_colocated_roles_share_a_process(pool):
    fused = RayWorkerGroup(
        pool,
        create_colocated_worker_cls(
            {
                "echo": RayClassWithInitArgs(EchoWorker, (5,)),
                "other": RayClassWithInitArgs(OtherWorker),
            }
        ),
        device="cpu",
    )
    groups = fused.spawn(["echo", "other"])
    assert groups["echo"].identity(1) == [(0, 2, 6), (1, 2, 6)]
    assert groups["other"].identity(1) == [("other", 0, 1), ("other", 1, 1)]
    assert groups["other"].is_initialized() == [True, True]
    assert groups["echo"].all_reduce(2.0) == [6.0, 6.0]
    fused.shutdown()


def test_resource_pool_that_cannot_be_placed_names_the_request(ray_local):
    with pytest.raises(RuntimeError, match="could not reserve"):
        RayResourcePool([8], use_gpu=False, ready_timeout_s=2)


def test_rendezvous_address_is_loopback_on_one_node_and_the_ray_node_address_otherwise(echo_group):
    import ray

    host, port = echo_group.get_rendezvous_address(loopback=True)
    assert host == "127.0.0.1" and 0 < port < 65536
    host, _ = echo_group.get_rendezvous_address(loopback=False)
    assert host == ray.util.get_node_ip_address()
