import json

import pytest
import torch
from torch import nn
from wfn_helpers import fast_config, tiny_setup

from wfn_kernels.fixing import WFNConfig, fix_weights, trainer
from wfn_kernels.format.container import CorruptFileError
from wfn_kernels.fixing.params import flatten, tracked_parameters


def _half_fixed_state(model, include_bn=True):
    params = tracked_parameters(model, include_bn)
    state = trainer._State(params)
    fixed = {n: torch.rand(p.shape, generator=torch.Generator().manual_seed(1)) < 0.5 for n, p in params}
    state.freeze(fixed, torch.tensor([0.0, 0.125]))
    return params, state


def test_fixed_weights_stay_exactly_fixed_even_with_sgd_momentum_and_weight_decay():
    model, loader, _ = tiny_setup()
    params, state = _half_fixed_state(model)
    before = {n: p.detach().clone() for n, p in params}
    cfg = fast_config(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=0.5, max_steps_per_iteration=5)
    trainer._train(1, model, params, state, cfg, loader, 1)
    for n, p in params:
        m = state.fixed[n]
        assert torch.equal(p[m], before[n][m]), n
        assert not torch.equal(p[~m], before[n][~m]), n  # the free weights did train


def test_masking_only_the_gradient_would_not_be_enough(monkeypatch):
    """Control for the test above: without restoring the values, weight decay moves fixed weights."""
    model, loader, _ = tiny_setup()
    params, state = _half_fixed_state(model)
    before = {n: p.detach().clone() for n, p in params}
    monkeypatch.setattr(trainer._State, "restore_fixed", lambda self: None)
    cfg = fast_config(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=0.5, max_steps_per_iteration=3)
    trainer._train(1, model, params, state, cfg, loader, 1)
    assert any(not torch.equal(p[state.fixed[n]], before[n][state.fixed[n]]) for n, p in params)


def test_end_to_end_quota_frozen_between_fixings_and_all_on_codebook(monkeypatch):
    model, loader, val = tiny_setup()
    cfg = fast_config()
    params = tracked_parameters(model, cfg.include_batchnorm)
    n = sum(p.numel() for _, p in params)
    snapshots, seen = [], []
    real_cluster = trainer.cluster

    def spy(flat, *a, **k):
        seen.append(flat.clone())
        return real_cluster(flat, *a, **k)

    monkeypatch.setattr(trainer, "cluster", spy)
    model, history = fix_weights(model, loader, val, cfg, progress=False,
                                 on_iteration=lambda e: snapshots.append(flatten(params)))
    assert [h["n_fixed"] for h in history] == [int(n * f) for f in cfg.fix_fractions]
    for t in range(1, len(history)):  # what was fixed after t-1 did not move while training in t
        prev = snapshots[t - 1]
        on_centre = torch.isin(prev, torch.tensor(history[t - 1]["centres"]))
        fixed_before = on_centre & (seen[t] == prev)
        assert int(fixed_before.sum()) >= history[t - 1]["n_fixed"]
    final = flatten(params)
    assert torch.isin(final, torch.tensor(history[-1]["centres"])).all()
    assert history[-1]["unique"] == len(set(final.tolist()))
    assert all(h["val_accuracy"] is not None for h in history)


def test_keep_fixed_keeps_every_earlier_fixed_weight():
    model, loader, val = tiny_setup()
    cfg = fast_config(keep_fixed=True, relative_tolerance=0.3, relax_tolerance=False)
    params = tracked_parameters(model, cfg.include_batchnorm)
    snapshots = []
    model, history = fix_weights(model, loader, None, cfg, progress=False,
                                 on_iteration=lambda e: snapshots.append(flatten(params)))
    assert all(h["moved"] == 0 for h in history)
    assert [h["kept"] for h in history] == [0] + [h["n_fixed"] for h in history[:-1]]
    masks = [torch.isin(s, torch.tensor(h["centres"])) for s, h in zip(snapshots, history)]
    for t in range(1, len(history)):  # a value fixed at t-1 is still there at t
        assert torch.equal(snapshots[t][masks[t - 1]], snapshots[t - 1][masks[t - 1]])


def test_nan_loss_stops_without_overwriting_the_last_checkpoint(tmp_path):
    model, loader, _ = tiny_setup()
    x, y = next(iter(loader))
    bad = [(torch.full_like(x, float("nan")), y)]
    cfg = fast_config()
    with pytest.raises(FloatingPointError, match="iteration 1"):
        fix_weights(model, bad, None, cfg, run_dir=tmp_path, progress=False)
    index = json.loads((tmp_path / "checkpoint.json").read_text())
    assert index["iteration"] == 0 and (tmp_path / index["state_file"]).is_file()


def test_checkpoint_from_another_model_or_config_is_rejected(tmp_path):
    model, loader, _ = tiny_setup()
    cfg = fast_config(fix_fractions=(0.5, 1.0), epochs_per_iteration=0)
    fix_weights(model, loader, None, cfg, run_dir=tmp_path, progress=False)
    other, _, _ = tiny_setup(width=6)
    with pytest.raises(ValueError, match="another model"):
        fix_weights(other, loader, None, cfg, run_dir=tmp_path, resume=True, progress=False)
    same, _, _ = tiny_setup()
    with pytest.raises(ValueError, match="different WFNConfig.*relative_tolerance"):
        fix_weights(same, loader, None, fast_config(fix_fractions=(0.5, 1.0), epochs_per_iteration=0,
                                                    relative_tolerance=0.2), run_dir=tmp_path, resume=True)
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        fix_weights(same, loader, None, cfg, run_dir=tmp_path / "nothing", resume=True, progress=False)
    (tmp_path / "checkpoint.json").write_text("{not json")
    with pytest.raises(CorruptFileError, match=r"checkpoint.json: JSON: no whole-file checksum"):
        fix_weights(same, loader, None, cfg, run_dir=tmp_path, resume=True, progress=False)


def test_bad_models_and_weights_are_rejected():
    _, loader, _ = tiny_setup()
    with pytest.raises(ValueError, match="no nn.Linear"):
        fix_weights(nn.Sequential(nn.Flatten(), nn.ReLU()), loader, progress=False)
    model, _, _ = tiny_setup()
    with torch.no_grad():
        model.classifier[1].weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="classifier.1.weight contains NaN"):
        fix_weights(model, loader, progress=False)


@pytest.mark.parametrize("kw, match", [
    (dict(relative_tolerance=0.0), r"open interval \(0, 1\)"),
    (dict(relative_tolerance=1.0), r"open interval \(0, 1\)"),
    (dict(fix_fractions=(0.5, 0.4, 1.0)), "strictly increasing"),
    (dict(fix_fractions=(0.0, 1.0)), "out-of-range"),
    (dict(fix_fractions=(0.5, 1.2)), "out-of-range"),
    (dict(fix_fractions=(0.5, 0.9)), "end at 1.0"),
    (dict(fix_fractions=()), "empty"),
    (dict(zero_threshold=0.01), "power of two"),
    (dict(optimizer="rmsprop"), "optimizer"),
    (dict(temperature=0.0), "temperature"),
    (dict(keep_fixed="yes"), "keep_fixed must be True or False"),
    (dict(same_sign=1), "same_sign must be True or False"),
])
def test_config_validation(kw, match):
    with pytest.raises(ValueError, match=match):
        WFNConfig(**kw)


def test_tolerance_schedule_relaxes_from_n_delta_to_delta():
    cfg = WFNConfig(relative_tolerance=0.01)
    assert [round(cfg.tolerance_at(t), 10) for t in range(10)] == [round(0.01 * k, 10) for k in range(10, 0, -1)]
    assert WFNConfig(relax_tolerance=False).tolerance_at(0) == 0.01
    assert WFNConfig.from_dict(cfg.to_dict()) == cfg


def test_batchnorm_recalibration_changes_only_running_statistics():
    model, loader, _ = tiny_setup()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer.recalibrate_batchnorm(model, loader, 3)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.endswith(("running_mean", "running_var", "num_batches_tracked")) for k in changed)
    bn = model.features[1]
    assert bn.momentum == 0.1 and int(bn.num_batches_tracked) == 3


class _WithIndex(torch.utils.data.Dataset):
    """A dataset whose items carry a third element (the sample index), as many real datasets do."""

    def __init__(self, split):
        self.split = split

    def __len__(self):
        return len(self.split.labels)

    def __getitem__(self, i):
        return self.split.images[i], self.split.labels[i], i


def test_any_loader_of_tuples_or_lists_with_extra_items_works_and_matches():
    from wfn_kernels.workflows import data

    train, test = data.digits()
    cfg = fast_config(max_steps_per_iteration=2)
    ref, _, _ = tiny_setup()
    fix_weights(ref, train.loader(64, shuffle=True, seed=0), test.loader(256), cfg, progress=False)
    model, _, _ = tiny_setup()
    loader = torch.utils.data.DataLoader(_WithIndex(train), batch_size=64, shuffle=True,
                                         generator=torch.Generator().manual_seed(0))
    fix_weights(model, loader, test.loader(256), cfg, progress=False)
    assert torch.equal(flatten(tracked_parameters(model, True)), flatten(tracked_parameters(ref, True)))


def test_a_batch_that_is_not_inputs_and_labels_is_named():
    model, _, _ = tiny_setup()
    dict_loader = [{"x": torch.zeros(2, 1, 8, 8), "y": torch.zeros(2, dtype=torch.long)}]
    with pytest.raises(TypeError, match=r"a batch must be \(inputs, labels, ...\) as a tuple or list, got dict"):
        trainer.evaluate(model, dict_loader)
    with pytest.raises(TypeError, match="got tuple of length 1"):
        fix_weights(model, [(torch.zeros(2, 1, 8, 8),)], None, fast_config(), progress=False)
