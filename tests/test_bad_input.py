"""Bad input and faults, in process: each case asserts the message that names what is wrong."""
import json

import pytest
import torch
from torch import nn

import wfn_kernels as wk
from wfn_kernels.fixing import checkpoint
from wfn_kernels.format.container import (CorruptFileError, read_safetensors, read_sealed_json, write_sealed_json,
                                          write_sealed_safetensors)
from wfn_kernels.format.packing import pack_codes
from wfn_kernels.workflows import models, pipeline

CB = wk.Codebook.from_values([-1.0, -0.25, 0.0, 0.125, 0.5, 1.5])


# --- codebook_linear: the K rule -------------------------------------------------------------------------

@pytest.mark.parametrize("bits,k_packed,k_x", [(4, 32, 31), (2, 32, 31), (2, 32, 29), (2, 8, 6), (4, 10, 9)])
def test_wrong_k_is_refused_without_in_features(bits, k_packed, k_x):
    codes = torch.randint(0, 4, (5, k_packed))
    x = torch.randn(3, k_x)
    with pytest.raises(ValueError, match=rf"x has K={k_x} columns, which does not fill the packed rows.*"
                                         rf"pass in_features={k_x}"):
        wk.codebook_linear(x, pack_codes(codes, bits), CB.values[:4], bits, backend="reference")


@pytest.mark.parametrize("bits", [2, 4])
def test_wrong_k_is_refused_with_in_features(bits):
    packed = pack_codes(torch.randint(0, 4, (5, 32)), bits)
    with pytest.raises(ValueError, match="x has K=31 columns but the weight has in_features=32"):
        wk.codebook_linear(torch.randn(3, 31), packed, CB.values[:4], bits, in_features=32, backend="reference")


@pytest.mark.parametrize("bits,k", [(2, 31), (4, 31), (8, 31), (2, 32), (4, 32)])
def test_right_k_is_accepted(bits, k):
    codes = torch.randint(0, 4, (5, k))
    x = torch.randint(-3, 4, (2, k)).float()
    kw = {} if k * bits % 8 == 0 else {"in_features": k}
    y = wk.codebook_linear(x, pack_codes(codes, bits), CB.values[:4], bits, backend="reference", **kw)
    assert torch.equal(y, x @ CB.values[:4][codes].t())


# --- load_packed: all or nothing --------------------------------------------------------------------------

class Five(nn.Module):
    def __init__(self, last_out=3, pad=1):
        super().__init__()
        self.c1 = nn.Conv2d(1, 2, 3, padding=1)
        self.c2 = nn.Conv2d(2, 2, 3, padding=pad)
        self.l1 = nn.Linear(32, 8)
        self.l2 = nn.Linear(8, 8)
        self.l3 = nn.Linear(8, last_out)
        self.bn = nn.BatchNorm1d(8)

    def forward(self, x):
        x = torch.flatten(self.c2(self.c1(x)), 1)
        return self.l3(self.bn(self.l2(self.l1(x))))


def _on_codebook(m):
    torch.manual_seed(0)
    with torch.no_grad():
        for mod in m.modules():
            if type(mod) in (nn.Linear, nn.Conv2d):
                mod.weight.copy_(CB.values[torch.randint(0, len(CB), mod.weight.shape)])
                if mod.bias is not None:  # integer biases: packed and float outputs are then exactly equal
                    mod.bias.copy_(torch.randint(-2, 3, mod.bias.shape).float())
    return m


@pytest.fixture
def five_file(tmp_path):
    m = _on_codebook(Five())
    wk.convert(m, codebook=CB)
    path = tmp_path / "five.wfn.safetensors"
    wk.save_packed(m, path, CB)
    return path


def _snapshot(m):
    return [(n, type(x)) for n, x in m.named_modules()], {k: v.clone() for k, v in m.state_dict().items()}


@pytest.mark.parametrize("target,match", [
    (lambda: Five(last_out=4), r"layer 'l3' has weight shape \(3, 8\) in the file but \(4, 8\)"),
    (lambda: Five(pad=0), r"layer 'c2' has padding \[1, 1\] in the file but \[0, 0\]"),
])
def test_load_packed_fails_before_changing_the_model(five_file, target, match):
    m = target()
    before = _snapshot(m)
    with pytest.raises(ValueError, match=match):
        wk.load_packed(five_file, m)
    after = _snapshot(m)
    assert after[0] == before[0]  # not one layer swapped (4 of 5 were, before)
    assert all(torch.equal(before[1][k], after[1][k]) for k in before[1])


def test_load_packed_names_a_missing_or_extra_tensor(five_file):
    class Six(Five):
        def __init__(self):
            super().__init__()
            self.extra = nn.LayerNorm(3)

    m = Six()
    types = [type(x) for x in m.modules()]
    with pytest.raises(ValueError, match=r"missing \['extra.bias', 'extra.weight'\]"):
        wk.load_packed(five_file, m)
    assert [type(x) for x in m.modules()] == types


def test_load_packed_names_a_layer_that_is_not_a_linear(five_file):
    m = Five()
    m.l2 = nn.Conv2d(8, 8, 1)
    with pytest.raises(ValueError, match="layer 'l2' is a WFNLinear in the file but a Conv2d"):
        wk.load_packed(five_file, m)


def test_load_packed_refuses_other_wfn_files(tmp_path):
    path = tmp_path / "model.safetensors"
    pipeline.save_model(nn.Linear(2, 2), path, "small-cnn", True)
    with pytest.raises(CorruptFileError, match="is a wfn-model file, not a wfn-packed file"):
        wk.load_packed(path, Five())
    plain = tmp_path / "plain.safetensors"
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(CorruptFileError, match="is not a wfn-packed file .no wfn metadata"):
        wk.load_packed(plain, Five())


@pytest.mark.parametrize("make,match,exc", [
    (lambda p: p.mkdir(), "is a directory, expected a file", IsADirectoryError),
    (lambda p: None, "does not exist", FileNotFoundError),
    (lambda p: p.write_bytes(b""), "length prefix: the file has 0 bytes", CorruptFileError),
    (lambda p: p.write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{}"), "says the JSON header has 5 bytes but 2",
     CorruptFileError),
    (lambda p: p.write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00[]"), "JSON header: expected an object",
     CorruptFileError),
    (lambda p: p.write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{x"), "JSON header: not valid JSON",
     CorruptFileError),
])
def test_unreadable_files_are_named(tmp_path, make, match, exc):
    path = tmp_path / "f.safetensors"
    make(path)
    with pytest.raises(exc, match=match):
        wk.load_packed(path, Five())


def test_packed_file_from_an_older_version_without_a_seal(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "old.safetensors"
    save_file({"a.packed": torch.zeros(1, 1, dtype=torch.uint8)}, str(path),
              metadata={"wfn_format": "wfn-packed", "wfn_header": "{}"})
    with pytest.raises(CorruptFileError, match="no whole-file checksum .wfn_file_sha256. found"):
        wk.load_packed(path, Five())


def test_reserved_metadata_keys_are_refused(tmp_path):
    with pytest.raises(ValueError, match="are reserved"):
        write_sealed_safetensors(tmp_path / "x", {"a": torch.zeros(1)}, {"wfn_file_sha256": "x"}, kind="wfn-model")
    with pytest.raises(ValueError, match="are reserved keys"):
        write_sealed_json(tmp_path / "x.json", {"wfn_format": "x"}, kind="wfn-run")


def test_sealed_json_of_another_kind(tmp_path):
    write_sealed_json(tmp_path / "a.json", {"x": 1}, kind="wfn-run")
    with pytest.raises(CorruptFileError, match="is not a wfn-checkpoint-index file .wfn_format='wfn-run'"):
        read_sealed_json(tmp_path / "a.json", kind="wfn-checkpoint-index")
    assert read_sealed_json(tmp_path / "a.json", kind="wfn-run") == {"x": 1}


def test_a_file_edited_and_resealed_by_hand_is_still_checked_for_kind(tmp_path):
    write_sealed_safetensors(tmp_path / "s.safetensors", {"a": torch.zeros(1)}, {}, kind="wfn-checkpoint")
    with pytest.raises(CorruptFileError, match="is a wfn-checkpoint file, not a wfn-model file"):
        read_safetensors(tmp_path / "s.safetensors", kind="wfn-model")


# --- checkpoints -------------------------------------------------------------------------------------------

@pytest.fixture
def ckpt(tmp_path):
    m = nn.Linear(4, 2)
    checkpoint.save(tmp_path, 0, m, {"weight": torch.zeros(2, 4, dtype=torch.bool)}, torch.tensor([0.0, 1.0]),
                    {"config": {}, "fingerprint": [1], "history": []})
    checkpoint.save(tmp_path, 1, m, {"weight": torch.ones(2, 4, dtype=torch.bool)}, torch.tensor([0.0, 1.0]),
                    {"config": {}, "fingerprint": [1], "history": []})
    return tmp_path, m


def test_checkpoint_state_swapped_for_another_runs(ckpt, tmp_path_factory):
    run, m = ckpt
    other = tmp_path_factory.mktemp("other")
    checkpoint.save(other, 1, nn.Linear(4, 2), {"weight": torch.ones(2, 4, dtype=torch.bool)}, None,
                    {"config": {}, "fingerprint": [1], "history": []})
    (run / "state-01.safetensors").write_bytes((other / "state-01.safetensors").read_bytes())
    with pytest.raises(CorruptFileError, match="is not the state file .*checkpoint.json committed"):
        checkpoint.load(run)


def test_checkpoint_state_missing(ckpt):
    run, _ = ckpt
    (run / "state-01.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="names state-01.safetensors, which is missing"):
        checkpoint.load(run)


def test_checkpoint_dir_is_a_file(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(NotADirectoryError, match="is a file, expected a directory"):
        checkpoint.load(tmp_path / "f")


def test_checkpoint_truncated_state(ckpt):
    run, _ = ckpt
    data = (run / "state-01.safetensors").read_bytes()
    (run / "state-01.safetensors").write_bytes(data[:-3])
    with pytest.raises(CorruptFileError, match="state-01.safetensors"):
        checkpoint.load(run)


def test_checkpoint_restore_into_another_model(ckpt):
    run, _ = ckpt
    _, tensors = checkpoint.load(run)
    with pytest.raises(ValueError, match="differing state keys"):
        checkpoint.restore(nn.Linear(4, 2, bias=False), tensors, ["weight"])
    with pytest.raises(ValueError, match=r"no fixed mask for \['bias'\]"):
        checkpoint.restore(nn.Linear(4, 2), tensors, ["weight", "bias"])


# --- run directories, models, baselines -------------------------------------------------------------------

def _spec(out, **kw):
    return pipeline.RunSpec(out=str(out), **kw)


def test_check_out_cases(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError, match="output directory .*file is a file, expected a directory"):
        pipeline.check_out(_spec(tmp_path / "file"))
    with pytest.raises(PermissionError, match="is not writable .*file is not a directory"):
        pipeline.check_out(_spec(tmp_path / "file" / "sub"))
    with pytest.raises(FileNotFoundError, match="nothing to resume in .*checkpoint.json is missing"):
        pipeline.check_out(_spec(tmp_path / "new", resume=True))
    with pytest.raises(ValueError, match="resume and overwrite exclude each other"):
        pipeline.check_out(_spec(tmp_path / "new", resume=True, overwrite=True))
    finished = tmp_path / "done"
    write_sealed_json(finished / "run.json", {"files": {}}, kind="wfn-run")
    with pytest.raises(pipeline.RunExistsError, match=r"already holds a finished run \(run.json\); pass --overwrite"):
        pipeline.check_out(_spec(finished))
    pipeline.check_out(_spec(finished, overwrite=True))


def test_interrupted_run_needs_resume_or_overwrite(ckpt, tmp_path_factory):
    run, _ = ckpt
    out = tmp_path_factory.mktemp("interrupted") / "out"
    (out / "checkpoints").mkdir(parents=True)
    for f in run.iterdir():
        (out / "checkpoints" / f.name).write_bytes(f.read_bytes())
    with pytest.raises(pipeline.RunExistsError, match="holds an interrupted run .*resume it with --resume"):
        pipeline.check_out(_spec(out))
    pipeline.check_out(_spec(out, resume=True))
    (out / "checkpoints" / "checkpoint.json").write_text("{}")
    with pytest.raises(CorruptFileError, match="checkpoint.json: JSON: no whole-file checksum"):
        pipeline.check_out(_spec(out, resume=True))


def test_verify_run_names_the_changed_output(tmp_path):
    (tmp_path / "summary.json").write_text('{"a": 1}')
    (tmp_path / "history.csv").write_text("x\n")
    from wfn_kernels.format.container import file_digest

    write_sealed_json(tmp_path / "run.json", {"files": {n: file_digest(tmp_path / n) for n in
                                                         ("summary.json", "history.csv")}}, kind="wfn-run")
    assert pipeline.read_summary(tmp_path) == {"a": 1}
    (tmp_path / "summary.json").write_text('{"a": 2}')
    with pytest.raises(CorruptFileError, match="summary.json: checksum mismatch against .*run.json"):
        pipeline.read_summary(tmp_path)
    (tmp_path / "summary.json").write_text('{"a": 1}')
    (tmp_path / "history.csv").unlink()
    with pytest.raises(CorruptFileError, match="history.csv: listed in .*run.json but missing"):
        pipeline.verify_run(tmp_path)
    with pytest.raises(FileNotFoundError, match="holds no finished run: run.json is missing"):
        pipeline.verify_run(tmp_path / "nothing")


@pytest.mark.parametrize("spec,match", [
    ("resnet-9000", r"unknown model 'resnet-9000'; choose one of \['small-cnn', 'small-resnet'\] or give your own"),
    ("no_such_module_xyz:Net", "cannot import module 'no_such_module_xyz'"),
    ("torch.nn:NoSuchLayer", "module 'torch.nn' has no class or function 'NoSuchLayer'"),
    ("torch.nn:Linear", "cannot be built without arguments"),
    ("collections:OrderedDict", "built a OrderedDict, not a torch.nn.Module"),
    (":Net", "expected 'package.module:ClassName'"),
])
def test_model_specs(spec, match):
    with pytest.raises(ValueError, match=match):
        models.build(spec)


def test_user_class_takes_no_kwargs():
    with pytest.raises(ValueError, match=r"a user class is built without arguments, got \['width'\]"):
        models.build("torch.nn:Identity", width=4)


def test_saved_model_files(tmp_path):
    path = tmp_path / "m.safetensors"
    pipeline.save_model(nn.Linear(3, 2), path, "small-cnn", True)
    with pytest.raises(ValueError, match="does not fit its model 'small-cnn'"):
        pipeline.load_saved_model(path)
    write_sealed_safetensors(tmp_path / "c.safetensors", {"a": torch.zeros(1)}, {}, kind="wfn-checkpoint")
    with pytest.raises(ValueError, match="is a wfn-checkpoint file, not a model state dict"):
        pipeline.load_saved_model(tmp_path / "c.safetensors")


def test_baseline_trained_with_other_settings_is_not_reused_silently(tmp_path):
    spec = _spec(tmp_path, baseline=str(tmp_path / "baseline.safetensors"), baseline_epochs=3)
    m = models.build("small-cnn")
    pipeline.save_model(m, tmp_path / "baseline.safetensors", "small-cnn", True,
                        {**pipeline._baseline_meta(spec), "baseline_epochs": "1"})
    with pytest.raises(ValueError, match="was trained with other settings .baseline_epochs 1 here 3.*--overwrite"):
        pipeline.ensure_baseline(models.build("small-cnn"), tmp_path / "baseline.safetensors", None, spec)
    pipeline.save_model(m, tmp_path / "baseline.safetensors", "small-resnet", True, pipeline._baseline_meta(spec))
    with pytest.raises(ValueError, match="wfn_model small-resnet here small-cnn"):
        pipeline.ensure_baseline(models.build("small-cnn"), tmp_path / "baseline.safetensors", None, spec)


# --- convert(): unusual graphs -----------------------------------------------------------------------------

def test_convert_lists_layer_types_it_does_not_pack():
    class Sub(nn.Linear):
        pass

    m = nn.Sequential(nn.Conv1d(2, 2, 1), nn.Embedding(4, 2), Sub(2, 2), nn.Linear(2, 2), nn.GRU(2, 2))
    _on_codebook(m)
    rep = wk.convert(m, codebook=CB)
    skipped = dict(rep.skipped)
    assert [c["name"] for c in rep.converted] == ["3"]
    for name, kind in (("0", "Conv1d"), ("1", "Embedding"), ("2", "Sub"), ("4", "GRU")):
        assert skipped[name].startswith(f"{kind} is not converted: convert() packs nn.Linear and nn.Conv2d")
    assert "- 2: Sub is not converted" in rep.summary()


def test_convert_shared_module_is_converted_under_every_name(tmp_path):
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn.Linear(6, 6)
            self.dec = self.enc

        def forward(self, x):
            return self.dec(torch.relu(self.enc(x)))

    m = _on_codebook(Shared())
    x = torch.randint(-2, 3, (3, 6)).float()
    expected = m(x)
    rep = wk.convert(m, codebook=CB)
    assert isinstance(m.dec, wk.WFNLinear) and m.enc is m.dec
    assert rep.converted[0]["aliases"] == ["dec"] and "enc is also registered as dec" in rep.summary()
    assert torch.equal(m(x), expected)
    wk.save_packed(m, tmp_path / "s.wfn.safetensors", CB)
    fresh = wk.load_packed(tmp_path / "s.wfn.safetensors", Shared())
    assert fresh.enc is fresh.dec and isinstance(fresh.dec, wk.WFNLinear)
    assert torch.equal(fresh(x), expected)
    header, _ = wk.read_packed(tmp_path / "s.wfn.safetensors")
    assert header["layers"][0]["aliases"] == ["dec"] and set(header["aliases"]) == {
        "dec.packed", "dec.codebook", "dec.global_index", "dec.bias"}


def test_convert_unsupported_padding_is_named():
    m = nn.Sequential(nn.Conv2d(1, 1, 3, padding="same"))
    rep = wk.convert(_on_codebook(m))
    assert rep.skipped == [("0", "unsupported padding ('zeros', 'same')")]


def test_stats_metadata_json_header_damaged_by_hand(tmp_path):
    """A header edited by hand (valid JSON, re-sealed) with another format_version is named."""
    m = _on_codebook(Five())
    wk.convert(m, codebook=CB)
    path = tmp_path / "p.safetensors"
    wk.save_packed(m, path, CB)
    header, tensors = wk.read_packed(path)
    header["format_version"] = 1
    write_sealed_safetensors(path, tensors, {"wfn_header": json.dumps(header)}, kind="wfn-packed")
    with pytest.raises(CorruptFileError, match="format_version 1 is not supported .this build reads version 2"):
        wk.read_packed(path)
