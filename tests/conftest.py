"""Shared pytest setup: small thread counts (CI has 2 cores) and paths to optional real data."""
import os

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(REPO_ROOT), "shared", "data")


@pytest.fixture
def shared_data_dir():
    """Path to ../shared/data, or skip with a clear reason when it is not beside the repo."""
    if not os.path.isdir(SHARED_DATA):
        pytest.skip(f"real data not found at {SHARED_DATA} (../shared is absent in this checkout)")
    return SHARED_DATA
