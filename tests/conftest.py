import pytest
import torch

# torch's thread count in the main thread when the tests start: the one the service's compute
# threads run on too (backend.batching.PROCESS_THREADS, read when backend is imported)
TORCH_THREADS = torch.get_num_threads()


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False,
                     help="run slow tests (real training runs)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: give --runslow to run")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _torch_threads():
    """Every test starts, and leaves, the main thread on TORCH_THREADS. Training and the CLI
    set torch's thread count (`threads`), and a fixture or test that trained on 1 thread
    would otherwise leave the test thread on 1 while a service in the same process computes
    on 2: comparisons of their floats then fail by rounding."""
    torch.set_num_threads(TORCH_THREADS)
    yield
    torch.set_num_threads(TORCH_THREADS)


@pytest.fixture(scope="session")
def shipped_service(tmp_path_factory):
    """One live service (uvicorn on a free port of 127.0.0.1) over the shipped
    digit-circle-mt for the test session: the URL. Used by the documentation tests."""
    from helpers import live_service, shipped_checkpoints

    folder = shipped_checkpoints(tmp_path_factory.mktemp("shipped") / "checkpoints",
                                 "digit-circle-mt")
    with live_service(folder, tmp_path_factory.mktemp("shipped-log") / "uvicorn.log") as url:
        yield url
