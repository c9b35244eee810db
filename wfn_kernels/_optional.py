"""Optional dependencies: which extra provides what, a clear error when one is missing, progress bars.

The core install needs torch, numpy and safetensors only. Extras (setup.py): ``[plots]`` matplotlib,
``[cli]`` tqdm + pyyaml, ``[data]`` scikit-learn, ``[torchao]`` torchao, ``[triton]`` triton.
"""

from __future__ import annotations

import importlib

EXTRAS = {"matplotlib": "plots", "tqdm": "cli", "yaml": "cli", "sklearn": "data", "torchao": "torchao",
          "triton": "triton"}


class MissingExtraError(ImportError):
    """A feature needs an optional dependency that is not installed (the message names the extra)."""


def require(module: str, what: str):
    """Import ``module`` or raise MissingExtraError saying which ``pip install 'wfn-kernels[extra]'`` adds it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        extra = EXTRAS.get(module.split(".")[0], "")
        hint = f"pip install 'wfn-kernels[{extra}]'" if extra else f"pip install {module.split('.')[0]}"
        raise MissingExtraError(f"{what} needs the {module.split('.')[0]!r} package, which is not installed "
                                f"({exc}); install it with: {hint}") from None


def progress(iterable, **kwargs):
    """``tqdm(iterable, **kwargs)`` when tqdm is installed (the ``[cli]`` extra), else ``iterable`` with no bar."""
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoBar(iterable)
    return tqdm(iterable, **kwargs)


class _NoBar:
    """Stands in for a tqdm bar: iterates, and ignores bar updates."""

    def __init__(self, iterable):
        self._it = iterable

    def __iter__(self):
        return iter(self._it)

    def __len__(self):
        return len(self._it)

    def set_postfix(self, *args, **kwargs):
        pass

    def set_postfix_str(self, *args, **kwargs):
        pass

    def set_description(self, *args, **kwargs):
        pass

    def update(self, *args, **kwargs):
        pass

    def write(self, *args, **kwargs):
        pass

    def close(self):
        pass
