import pytest


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


@pytest.fixture(scope="session")
def shipped_service(tmp_path_factory):
    """One live service (uvicorn on a free port of 127.0.0.1) over the shipped
    digit-circle-mt for the test session: the URL. Used by the documentation tests."""
    from helpers import live_service, shipped_checkpoints

    folder = shipped_checkpoints(tmp_path_factory.mktemp("shipped") / "checkpoints",
                                 "digit-circle-mt")
    with live_service(folder, tmp_path_factory.mktemp("shipped-log") / "uvicorn.log") as url:
        yield url
