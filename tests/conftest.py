import os

import pytest
import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pytest_addoption(parser):
    parser.addoption(
        "--learning-seed",
        type=int,
        default=None,
        help="seed for the tests that assert learning (tests/e2e), instead of their configs' defaults: "
        "to check that a test's margin holds on other seeds",
    )


@pytest.fixture
def learning_seed(request) -> int | None:
    return request.config.getoption("--learning-seed")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def ray_local():
    """One Ray instance on loopback for the whole session (starting Ray takes seconds). Workers get
    the repository on their path so classes defined in tests can be imported there."""
    import ray

    if not ray.is_initialized():
        ray.init(
            num_cpus=2,
            _node_ip_address="127.0.0.1",
            include_dashboard=False,
            runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": REPO_ROOT}},
        )
    yield ray
    ray.shutdown()
