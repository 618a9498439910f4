import os

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "offline")
# under pytest-xdist (`make test` runs 2 workers) each worker gets one core
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def pytest_collection_modifyitems(config, items):
    """``@pytest.mark.cuda`` tests are skipped on a machine without a CUDA device."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (make gpu-check)")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)
