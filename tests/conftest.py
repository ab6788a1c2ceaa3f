"""Shared pytest setup: small thread counts (CI has 2 cores), fixtures for data."""

import os

import pytest
import torch

# pytest puts this folder on sys.path (it holds no __init__.py): the test folders import
# dualalign_testing by name.
from dualalign_testing import SHARED_DATA

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def shared_data_dir():
    """The folder of the real data sets (``SHARED_DATA``), or skip with a clear reason."""
    if not os.path.isdir(SHARED_DATA):
        pytest.skip(f"real data not found at {SHARED_DATA} (set DUALALIGN_REAL_DATA to its folder)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory):
    """A small synthetic set (128 px patches) shared by the training tests of one session."""
    from dualalign.data.synthetic import generate_dataset

    root = tmp_path_factory.mktemp("synthetic")
    paths = generate_dataset(
        str(root), seed=0, image_size=128, num_labeled=8, num_unlabeled=8, num_val=2, num_test=4
    )
    return paths
