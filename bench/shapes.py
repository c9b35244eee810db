"""Named shape sets for the benchmarks, and a ResNet-18-shaped network built here (no torchvision).

Linear cases are (name, M, N, K); conv cases are (name, batch, C_in, H, W, C_out, kernel, stride, padding).
ResNet-18 geometry from He et al., "Deep Residual Learning for Image Recognition" (CVPR 2016), Table 1,
at 224x224 input.
"""

from __future__ import annotations

import torch
from torch import nn

SQUARE = [1024, 2048, 4096, 8192]
BATCHES = [1, 4, 16, 64, 256]

# ResNet-18 convolutions (unique shapes; count = how often each occurs in the network).
RESNET18_CONVS = [
    # name, C_in, H, W, C_out, k, stride, pad, count
    ("conv1", 3, 224, 224, 64, 7, 2, 3, 1),
    ("layer1.conv", 64, 56, 56, 64, 3, 1, 1, 4),
    ("layer2.0.conv1", 64, 56, 56, 128, 3, 2, 1, 1),
    ("layer2.conv", 128, 28, 28, 128, 3, 1, 1, 3),
    ("layer2.0.downsample", 64, 56, 56, 128, 1, 2, 0, 1),
    ("layer3.0.conv1", 128, 28, 28, 256, 3, 2, 1, 1),
    ("layer3.conv", 256, 14, 14, 256, 3, 1, 1, 3),
    ("layer3.0.downsample", 128, 28, 28, 256, 1, 2, 0, 1),
    ("layer4.0.conv1", 256, 14, 14, 512, 3, 2, 1, 1),
    ("layer4.conv", 512, 7, 7, 512, 3, 1, 1, 3),
    ("layer4.0.downsample", 256, 14, 14, 512, 1, 2, 0, 1),
]
RESNET18_LINEAR = [("fc", 1000, 512)]
MLP_LINEAR = [("mlp.fc1", 1024, 784), ("mlp.fc2", 1024, 1024), ("mlp.fc3", 10, 1024)]


def linear_cases(shape_set: str, batches=BATCHES) -> list[tuple[str, int, int, int]]:
    """(name, M, N, K) for a named set: square-gemv, square-gemm, resnet18, mlp."""
    if shape_set == "square-gemv":
        return [(f"sq{n}", 1, n, n) for n in SQUARE]
    if shape_set == "square-gemm":
        return [(f"sq{n}", m, n, n) for n in SQUARE if n <= 4096 for m in batches if m > 1]
    if shape_set == "resnet18":
        return [(name, m, n, k) for name, n, k in RESNET18_LINEAR for m in batches]
    if shape_set == "mlp":
        return [(name, m, n, k) for name, n, k in MLP_LINEAR for m in batches]
    raise ValueError(f"unknown shape set {shape_set!r}; choose from {SHAPE_SETS}")


def conv_cases(shape_set: str, batches=(1,)) -> list[tuple]:
    if shape_set != "resnet18":
        return []
    return [(name, b, ci, h, w, co, k, s, p) for name, ci, h, w, co, k, s, p, _ in RESNET18_CONVS for b in batches]


SHAPE_SETS = ("square-gemv", "square-gemm", "resnet18", "mlp")


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + idt)


class ResNet18(nn.Module):
    """ResNet-18 geometry (11.7 M parameters) for 224x224 RGB input, 1000 classes."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.pool = nn.MaxPool2d(3, 2, 1)
        layers, c = [], 64
        for c_out, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers.append(nn.Sequential(BasicBlock(c, c_out, stride), BasicBlock(c_out, c_out, 1)))
            c = c_out
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x):
        x = self.pool(torch.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def put_on_codebook(model: nn.Module, values: torch.Tensor, seed: int = 0) -> None:
    """Overwrite every Linear/Conv2d weight with values drawn from ``values`` (a stand-in for a fixed net
    whose weight statistics do not matter for speed), scaled per layer like a Kaiming init."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in model.modules():
            if type(mod) in (nn.Linear, nn.Conv2d):
                idx = torch.randint(0, values.numel(), mod.weight.shape, generator=g)
                mod.weight.copy_(values[idx])
