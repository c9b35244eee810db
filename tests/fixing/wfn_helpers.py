"""Tiny deterministic WFN setups on the bundled digits, shared by the trainer tests and subprocesses."""

import torch

from wfn_kernels.workflows import data, models
from wfn_kernels.fixing import WFNConfig

FAST = dict(fix_fractions=(0.5, 0.8, 0.95, 1.0), epochs_per_iteration=1, max_steps_per_iteration=4, lr=1e-3,
            relative_tolerance=0.03)


def tiny_setup(width=4, seed=0):
    torch.manual_seed(seed)
    train, test = data.digits()
    model = models.build("small-cnn", width=width)
    return model, train.loader(64, shuffle=True, seed=seed), test.loader(256)


def fast_config(**kw):
    return WFNConfig(**{**FAST, **kw})


def flat_state(model):
    return torch.cat([v.detach().float().reshape(-1) for v in model.state_dict().values()])
