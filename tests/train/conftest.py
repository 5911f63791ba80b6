"""Fixtures for the training tests (the data itself is in shapes_data.py)."""

import pytest
import torch
from shapes_data import ShapesDataset


@pytest.fixture
def shapes():
    return ShapesDataset()


@pytest.fixture
def shapes_factory():
    return ShapesDataset


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models run faster on one thread, notably when the 2 cores are shared; restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
