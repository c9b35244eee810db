"""Reference CNNs for the demo and tests (trained by the project itself: WFN starts from a trained net)."""

from __future__ import annotations

import torch
from torch import nn


class SmallCNN(nn.Module):
    """A small conv net for (1, H, W) images: two 3x3 conv blocks with BN, global pooling, linear head.

    Input float32 (B, 1, H, W); output logits (B, num_classes).
    """

    def __init__(self, num_classes: int = 10, width: int = 16):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(8 * width, 64), nn.ReLU(),
                                        nn.Linear(64, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class _Block(nn.Module):
    """Basic residual block: two 3x3 conv+BN, identity or 1x1-conv shortcut (He et al. 2016)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class SmallResNet(nn.Module):
    """A ResNet-style CNN for (1, H, W) images: stem conv, three residual stages (width, 2w, 4w; the
    last two downsample), global average pooling, linear head. Input float32 (B, 1, H, W); logits out.
    """

    def __init__(self, num_classes: int = 10, width: int = 16):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.layers = nn.Sequential(_Block(width, width, 1), _Block(width, 2 * width, 2),
                                    _Block(2 * width, 4 * width, 2))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.layers(self.stem(x))), 1))


MODELS = {"small-cnn": SmallCNN, "small-resnet": SmallResNet}


def build(name: str, **kwargs) -> nn.Module:
    """A fresh model: a bundled name (``small-cnn``, ``small-resnet``; ``kwargs`` go to its constructor)
    or ``package.module:Name``, a class (or factory function) of the user's that builds an
    ``nn.Module`` with no arguments. Importing the module is the only code run: nothing is unpickled.
    The spec string is what ``wfn fix`` stores in its model.safetensors, so ``wfn stats`` and ``wfn-sim``
    rebuild the same architecture."""
    if name in MODELS:
        return MODELS[name](**kwargs)
    if not isinstance(name, str) or ":" not in name:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)} or give your own class "
                         "as package.module:ClassName (importable: on PYTHONPATH)")
    if kwargs:
        raise ValueError(f"model {name!r}: a user class is built without arguments, got {sorted(kwargs)}")
    from wfn_sim.extract import build_model  # one importer for both commands (no pickles)

    return build_model(name)
