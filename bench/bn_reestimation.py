"""How much of a fixed model's accuracy loss is stale BatchNorm statistics: test accuracy as saved, then after
re-estimating every BatchNorm's running mean / variance (wfn_kernels.fixing.trainer.recalibrate_batchnorm:
the plain average over N training batches, train-mode forward, no gradients; the weights, BatchNorm's own
fixed gamma / beta and every unique value stay as they are).

    python bench/bn_reestimation.py [MODEL_FILE ...] [--batches 20 100] [--batch-size 128]
    (default: the curve models in bench/results/curve/models/; Fashion-MNIST, the whole 10k test split)

The training batches come from the training split less the tenth the fixing runs hold out for validation
(wfn_kernels.workflows.data.validation_split), shuffled with seed 0.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch

from wfn_kernels.fixing.trainer import evaluate, recalibrate_batchnorm
from wfn_kernels.format.container import read_safetensors
from wfn_kernels.workflows import data, models

MODELS = Path(__file__).parent / "results/curve/models"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", help="wfn-model files (default: every model in bench/results/curve/models)")
    ap.add_argument("--batches", type=int, nargs="+", default=[20, 100])
    ap.add_argument("--batch-size", type=int, default=128)
    args = ap.parse_args()
    if any(b < 1 for b in args.batches) or args.batch_size < 1:
        ap.error(f"--batches and --batch-size must be >= 1, got {args.batches} and {args.batch_size}")
    paths = [Path(p) for p in args.models] or sorted(MODELS.glob("*.safetensors"))
    loaded = []
    for p in paths:
        try:
            _, meta, tensors = read_safetensors(p, kind="wfn-model", what="model file")
        except (OSError, ValueError) as e:  # missing, damaged, or not a model `wfn fix` wrote
            ap.error(str(e))
        loaded.append((p, meta, tensors))
    torch.set_num_threads(1)
    train, test = data.load("fashion-mnist")
    fit, _ = data.validation_split(train)
    print(f"Fashion-MNIST test split ({len(test.labels)} images); re-estimation over batches of {args.batch_size} "
          "from the training split less its validation tenth\n")
    print("| model | unique conv / linear weight values (zero included) | test top-1 as saved (%) | " +
          " | ".join(f"after re-estimating over {b} batches (%)" for b in args.batches) + " |")
    print("|---|---|---|" + "---|" * len(args.batches))
    for p, meta, tensors in loaded:
        model = models.build(meta["wfn_model"])
        model.load_state_dict(tensors)
        unique = torch.unique(torch.cat([m.weight.detach().reshape(-1) for m in model.modules()
                                         if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))])).numel()
        cells = [p.name, str(unique), f"{evaluate(model, test.loader(1000)):.2f}"]
        for b in args.batches:
            m = copy.deepcopy(model)
            recalibrate_batchnorm(m, fit.loader(args.batch_size, shuffle=True, seed=0), b)
            cells.append(f"{evaluate(m, test.loader(1000)):.2f}")
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
