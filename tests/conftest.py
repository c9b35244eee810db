import os

import pytest
import torch

# The machine has 2 cores; tests that do not measure threading use one.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture
def rng():
    return torch.Generator().manual_seed(1234)
