import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))  # helpers: naive.py, wfn_helpers.py
torch.set_num_threads(1)
