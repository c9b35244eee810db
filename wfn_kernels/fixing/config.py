"""WFNConfig: every constant of Weight Fixing Networks as a validated field.

Defaults are the authors' final ImageNet configuration as read from their code (see
docs/algorithm.md, cited below by section as "§x"): the 10-step fixing schedule, γ0 = 2^-7,
regulariser ratio 0.4 at temperature 0.05, Adam at lr 2e-5 with gradient clipping 0.5, 3 epochs per
iteration, δ relaxed linearly from 10δ to δ, threshold doubling after order 20.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

PAPER_FIX_FRACTIONS = (0.3, 0.6, 0.8, 0.9, 0.95, 0.975, 0.99, 0.9975, 0.999, 1.0)  # docs/algorithm.md §2.7
PAPER_ZERO_THRESHOLD = 2.0 ** -7  # γ0, `--zero_distance` default (docs/algorithm.md §2.2)
PAPER_RELATIVE_TOLERANCE = 0.01  # δ of the middle README rows (ResNet-18/34/50 at δ = 0.01, docs/algorithm.md §5.1)
PAPER_REGULARIZER_RATIO = 0.4  # HEAD default and final ImageNet scripts (docs/algorithm.md §3.2)
PAPER_TEMPERATURE = 0.05  # softmin temperature (docs/algorithm.md §3.2)
PAPER_LR = 2e-5  # Adam, constant (docs/algorithm.md §3.1)
PAPER_GRAD_CLIP = 0.5  # PL gradient_clip_val (docs/algorithm.md §3.3)
PAPER_EPOCHS_PER_ITERATION = 3  # README: "3 was used in the paper" (docs/algorithm.md §3.3)
PAPER_MAX_ORDER_BEFORE_DOUBLING = 20  # order > 20 doubles the threshold (docs/algorithm.md §2.6)
PAPER_RATIO_CAP = 0.9999  # d = min(a, 0.9999) in the grid ratio (docs/algorithm.md §2.3)
OPTIMIZERS = ("adam", "sgd")


@dataclass(frozen=True)
class WFNConfig:
    """Hyper-parameters of a WFN run. Names follow the paper's terms; units are plain fractions.

    relative_tolerance: δ, the allowed mean relative distance |w - c| / |w| of a cluster (0 < δ < 1).
    zero_threshold: γ0, a power of two; |w| < γ0 is at distance 0 from the centre 0 and is the smallest
        grid value / exponent floor of the power-of-two terms.
    fix_fractions: cumulative fraction of tracked parameters fixed after each iteration; strictly
        increasing, in (0, 1], ending at 1.0 so every tracked weight ends on the codebook.
    relax_tolerance: use δ_t = max(δ, δ·(N - t)) (10δ … δ for N = 10) instead of δ every iteration.
    regularizer_ratio: L_reg's contribution as a fixed fraction of the batch cross-entropy (0 disables).
    temperature: softmin temperature T of the regulariser.
    epochs_per_iteration: training epochs between two fixings (iterations t >= 1).
    first_epochs: training epochs before the first fixing (0 for a pre-trained model, as in the paper).
    max_steps_per_iteration: optional cap on optimiser steps per iteration (None = whole epochs).
    optimizer / lr / momentum / weight_decay: optimiser rebuilt every iteration (the original resets it).
    grad_clip_norm: max global gradient norm (None disables).
    include_batchnorm: fix BatchNorm affine γ and β too (on for the published ImageNet runs, docs/algorithm.md §2.1).
    max_order_before_doubling / ratio_cap: termination valve and grid-ratio cap of the clustering.
    bn_recalibration_batches: after each fixing, re-estimate BatchNorm running statistics over this many
        training batches (no gradients). 0 (default) is the original, which evaluates with the statistics
        of the weights before the fixing; an extension, not in the paper.
    seed: seeds every iteration's RNG as seed * 1000 + t, so a resumed run replays the same batches.
    keep_fixed: weights fixed by an earlier iteration stay on their centre and the greedy pass places only
        the free weights. False (default) re-clusters the whole network every iteration as the original
        does, which can move a fixed weight or leave it unfixed (docs/algorithm.md §9 leaves this open; measured in
        wfn_kernels/fixing/clustering.py's docstring).
    same_sign: a non-zero centre never takes a weight of the opposite sign (default). False is the
        original, whose running-mean acceptance admits such sign flips as outliers and collapsed runs.
    max_accuracy_drop: accuracy guard, in points of validation accuracy below the model's accuracy before
        fixing (None: off). An iteration that drops further gets a ``warning`` in its history entry and a
        Python warning; with ``stop_on_accuracy_drop`` the run stops (AccuracyDropError) before that
        iteration's checkpoint is written, so the last checkpoint is the last good one.
    divergence_loss_factor: the run stops (DivergenceError, last good checkpoint kept) when an iteration's
        mean training loss exceeds this multiple of the first iteration's; a non-finite loss, parameter or
        buffer (e.g. a BatchNorm running variance) stops it too.
    rescale_bn_convs: before the first fixing, scale every Conv2d that feeds a BatchNorm2d to this weight RMS
        (the network's function is unchanged; fixing/rescale.py). None (default, the paper): no rescale.
        γ0 is absolute, so this sets how many weights lie below it (bench/results/wfn_zeros.md).

    Presets: :meth:`paper` (the defaults: the authors' final configuration) and :meth:`small_model` (the
    settings measured on this project's small CNNs; see bench/results/wfn_fashion_mnist.md).
    """

    relative_tolerance: float = PAPER_RELATIVE_TOLERANCE
    zero_threshold: float = PAPER_ZERO_THRESHOLD
    fix_fractions: tuple = PAPER_FIX_FRACTIONS
    relax_tolerance: bool = True
    regularizer_ratio: float = PAPER_REGULARIZER_RATIO
    temperature: float = PAPER_TEMPERATURE
    epochs_per_iteration: int = PAPER_EPOCHS_PER_ITERATION
    first_epochs: int = 0
    max_steps_per_iteration: int | None = None
    optimizer: str = "adam"
    lr: float = PAPER_LR
    momentum: float = 0.9
    weight_decay: float = 0.0
    grad_clip_norm: float | None = PAPER_GRAD_CLIP
    include_batchnorm: bool = True
    max_order_before_doubling: int = PAPER_MAX_ORDER_BEFORE_DOUBLING
    ratio_cap: float = PAPER_RATIO_CAP
    bn_recalibration_batches: int = 0
    seed: int = 0
    keep_fixed: bool = False
    same_sign: bool = True
    max_accuracy_drop: float | None = None
    stop_on_accuracy_drop: bool = False
    divergence_loss_factor: float = 100.0
    rescale_bn_convs: float | None = None

    def __post_init__(self):
        object.__setattr__(self, "fix_fractions", tuple(float(f) for f in self.fix_fractions))
        _check_open_unit("relative_tolerance (δ)", self.relative_tolerance)
        _check_open_unit("ratio_cap", self.ratio_cap)
        z = self.zero_threshold
        if not (isinstance(z, (int, float)) and z > 0 and math.isfinite(z) and math.frexp(z)[0] == 0.5):
            raise ValueError(f"WFNConfig: zero_threshold (γ0) must be a positive power of two, got {z!r}")
        _check_schedule(self.fix_fractions)
        for name in ("regularizer_ratio", "weight_decay", "lr", "temperature", "momentum"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"WFNConfig: {name} must be a finite number >= 0, got {v!r}")
        if self.temperature <= 0 or self.lr <= 0:
            raise ValueError(f"WFNConfig: temperature and lr must be > 0, got {self.temperature}, {self.lr}")
        for name in ("epochs_per_iteration", "first_epochs", "max_order_before_doubling", "seed",
                     "bn_recalibration_batches"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"WFNConfig: {name} must be an int >= 0, got {v!r}")
        if self.max_steps_per_iteration is not None and (
                not isinstance(self.max_steps_per_iteration, int) or self.max_steps_per_iteration < 1):
            raise ValueError(f"WFNConfig: max_steps_per_iteration must be None or an int >= 1, "
                             f"got {self.max_steps_per_iteration!r}")
        for name in ("keep_fixed", "same_sign", "relax_tolerance", "include_batchnorm"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"WFNConfig: {name} must be True or False, got {getattr(self, name)!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"WFNConfig: optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.grad_clip_norm is not None and not self.grad_clip_norm > 0:
            raise ValueError(f"WFNConfig: grad_clip_norm must be None or > 0, got {self.grad_clip_norm!r}")
        _check_guards(self)
        if self.relax_tolerance and self.relative_tolerance * self.num_iterations >= 1:
            raise ValueError(
                f"WFNConfig: the relaxed schedule starts at δ_0 = δ·N = {self.relative_tolerance} x "
                f"{self.num_iterations} = {self.relative_tolerance * self.num_iterations:g}, which reaches 1: "
                "every weight would be within tolerance of the centre 0. Use relative_tolerance < "
                f"{1 / self.num_iterations:g} or relax_tolerance=False (wfn fix --no-relax)")

    @classmethod
    def paper(cls, **overrides) -> WFNConfig:
        """The authors' final configuration (= the defaults), with ``overrides`` applied."""
        return cls(**overrides)

    @classmethod
    def small_model(cls, **overrides) -> WFNConfig:
        """Settings measured on this project's small CNNs (small-cnn / small-resnet, 23k-78k weights, on
        Fashion-MNIST and digits; bench/results/wfn_fashion_mnist.md): δ = 0.15 without relaxation, conv /
        linear weights only (BatchNorm stays float), lr 3e-4, 1 epoch per iteration, BatchNorm statistics
        re-estimated over 20 batches after each fixing. The paper configuration at δ = 0.01 keeps 61-65
        unique non-zero values on small-resnet, BatchNorm included (bench/results/curve/curve.md); this
        preset keeps 8-12."""
        base = dict(relative_tolerance=0.15, relax_tolerance=False, include_batchnorm=False, lr=3e-4,
                    epochs_per_iteration=1, bn_recalibration_batches=20)
        return cls(**{**base, **overrides})

    @classmethod
    def preset(cls, name: str, **overrides) -> WFNConfig:
        """``WFNConfig.preset("paper" | "small-model", **overrides)``."""
        makers = {"paper": cls.paper, "small-model": cls.small_model}
        if name not in makers:
            raise ValueError(f"WFNConfig: unknown preset {name!r}; choose one of {sorted(makers)}")
        return makers[name](**overrides)

    @property
    def num_iterations(self) -> int:
        return len(self.fix_fractions)

    def tolerance_at(self, t: int) -> float:
        """δ_t = max(δ, δ·(N - t)) for iteration t in [0, N) (docs/algorithm.md §2.7), or δ without relaxation."""
        if not 0 <= t < self.num_iterations:
            raise IndexError(f"iteration {t} is outside the schedule of {self.num_iterations} steps")
        if not self.relax_tolerance:
            return self.relative_tolerance
        return max(self.relative_tolerance, self.relative_tolerance * (self.num_iterations - t))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["fix_fractions"] = list(self.fix_fractions)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> WFNConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"WFNConfig: unknown fields {sorted(unknown)}")
        return cls(**d)


def _check_guards(cfg) -> None:
    d = cfg.max_accuracy_drop
    if d is not None and not (isinstance(d, (int, float)) and not isinstance(d, bool) and math.isfinite(d) and d >= 0):
        raise ValueError(f"WFNConfig: max_accuracy_drop must be None or a number of accuracy points >= 0, got {d!r}")
    if not isinstance(cfg.stop_on_accuracy_drop, bool):
        raise ValueError(f"WFNConfig: stop_on_accuracy_drop must be True or False, got {cfg.stop_on_accuracy_drop!r}")
    r = cfg.rescale_bn_convs
    if r is not None and not (isinstance(r, (int, float)) and not isinstance(r, bool) and math.isfinite(r) and r > 0):
        raise ValueError(f"WFNConfig: rescale_bn_convs must be None or a weight RMS > 0, got {r!r}")
    f = cfg.divergence_loss_factor
    if not (isinstance(f, (int, float)) and not isinstance(f, bool) and f > 1):
        raise ValueError(f"WFNConfig: divergence_loss_factor must be a number > 1, got {f!r}")


def _check_open_unit(name: str, v) -> None:
    if not (isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1):
        raise ValueError(f"WFNConfig: {name} must lie in the open interval (0, 1), got {v!r}")


def _check_schedule(fr: tuple) -> None:
    if not fr:
        raise ValueError("WFNConfig: fix_fractions is empty; give at least one fraction, ending at 1.0")
    bad = [f for f in fr if not (0 < f <= 1)]
    if bad:
        raise ValueError(f"WFNConfig: fix_fractions must lie in (0, 1], got out-of-range values {bad}")
    for a, b in zip(fr, fr[1:]):
        if not b > a:
            raise ValueError(f"WFNConfig: fix_fractions must be strictly increasing, got {a} then {b}")
    if fr[-1] != 1.0:
        raise ValueError(f"WFNConfig: fix_fractions must end at 1.0 (every weight fixed), got {fr[-1]}")
