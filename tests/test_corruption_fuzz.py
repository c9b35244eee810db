"""Seeded fuzz: single-bit flips, single-byte replacements and truncations in every region of the files the
package writes (packed models, checkpoints and their index, `wfn fix` model files). Every damaged file must
be rejected with CorruptFileError naming the file, and nothing may be loaded from it."""
import json
import random

import pytest
import torch
from torch import nn

import wfn_kernels as wk
from wfn_kernels.fixing import WFNConfig, checkpoint, fix_weights
from wfn_kernels.format.container import CorruptFileError, is_packed_file, read_packed
from wfn_kernels.workflows.pipeline import load_saved_model, save_model

CB = wk.Codebook.from_values([-1.0, -0.25, 0.0, 0.125, 0.5, 1.5])
PER_REGION = 10  # positions per region; each gets one bit flip and one byte replacement


def tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(32, 3))
    with torch.no_grad():
        for layer in (m[0], m[4]):
            layer.weight.copy_(CB.values[torch.randint(0, len(CB), layer.weight.shape)])
        m[1].running_mean.copy_(torch.randn(2))
    return m.eval()


def _metadata_span(head: bytes) -> tuple[int, int]:
    """Byte span (within the JSON header) of the ``__metadata__`` object's value, string-aware."""
    start = head.index(b'"__metadata__"') + len(b'"__metadata__"')
    start = head.index(b"{", start)
    depth, i, in_str = 0, start, False
    while True:
        c = head[i:i + 1]
        if in_str:
            if c == b"\\":
                i += 1
            elif c == b'"':
                in_str = False
        elif c == b'"':
            in_str = True
        elif c == b"{":
            depth += 1
        elif c == b"}":
            depth -= 1
            if depth == 0:
                return start, i + 1
        i += 1


def regions(data: bytes) -> dict[str, range]:
    """Every region of a safetensors file: length prefix, JSON tensor table, metadata, padding, each tensor."""
    n = int.from_bytes(data[:8], "little")
    head = data[8:8 + n]
    m0, m1 = _metadata_span(head)
    stripped = len(head.rstrip(b" "))
    out = {"length prefix": range(0, 8), "JSON header: metadata": range(8 + m0, 8 + m1),
           "JSON header: tensor table": range(8, 8 + m0)}
    if stripped < n:
        out["JSON header: padding"] = range(8 + stripped, 8 + n)
    if m1 < stripped:
        out["JSON header: tensor table (after metadata)"] = range(8 + m1, 8 + stripped)
    for name, info in json.loads(head).items():
        if name != "__metadata__":
            a, b = info["data_offsets"]
            if b > a:
                out[f"tensor {name}"] = range(8 + n + a, 8 + n + b)
    return out


def damaged_copies(data: bytes, rng: random.Random, exhaustive_prefix: bool = True):
    """(label, damaged bytes) for every region: bit flips and byte replacements at sampled positions,
    every bit of the length prefix, and truncations."""
    for region, span in regions(data).items():
        positions = list(span) if len(span) <= PER_REGION else rng.sample(list(span), PER_REGION)
        for pos in positions:
            bit = rng.randrange(8)
            flipped = bytearray(data)
            flipped[pos] ^= 1 << bit
            yield f"{region}: bit {bit} of byte {pos}", bytes(flipped)
            replaced = bytearray(data)
            replaced[pos] = rng.choice([v for v in range(256) if v != data[pos]])
            yield f"{region}: byte {pos} -> {replaced[pos]:#04x}", bytes(replaced)
        if region == "length prefix" and exhaustive_prefix:
            for pos in span:
                for bit in range(8):
                    flipped = bytearray(data)
                    flipped[pos] ^= 1 << bit
                    yield f"{region}: bit {bit} of byte {pos} (every bit)", bytes(flipped)
    for cut in sorted(rng.sample(range(len(data)), 12)):
        yield f"truncated to {cut} bytes", data[:cut]


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}, [type(m) for m in model.modules()]


def _unchanged(model, before) -> bool:
    sd, types = before
    now = model.state_dict()
    return [type(m) for m in model.modules()] == types and sd.keys() == now.keys() and \
        all(torch.equal(sd[k], now[k]) for k in sd)


def test_every_damaged_packed_file_is_rejected_and_nothing_loaded(tmp_path):
    src = tmp_path / "good.wfn.safetensors"
    m = tiny_model()
    wk.convert(m, codebook=CB)
    wk.save_packed(m, src, CB)
    data = src.read_bytes()
    names = set(regions(data))
    assert {"length prefix", "JSON header: metadata", "JSON header: tensor table"} <= names
    assert sum(n.startswith("tensor ") for n in names) == len(m.state_dict()) == 13  # every tensor is a region
    target = tiny_model(seed=1)
    before = _state(target)
    bad = tmp_path / "bad.wfn.safetensors"
    cases = 0  # each case fails the test unless both the reader and load_packed refuse it
    for label, blob in damaged_copies(data, random.Random(13)):
        bad.write_bytes(blob)
        cases += 1
        with pytest.raises(CorruptFileError, match="bad.wfn.safetensors") as exc:
            read_packed(bad)
        with pytest.raises(CorruptFileError):
            wk.load_packed(bad, target)
        assert _unchanged(target, before), f"{label}: the model changed ({exc.value})"
        assert is_packed_file(bad) in (True, False)  # never raises
    print(f"packed file: {cases} damaged copies, all rejected")
    assert cases >= 380
    read_packed(src)  # the undamaged original still reads


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    m = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    g = torch.Generator().manual_seed(0)
    data = [(torch.rand(16, 1, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g)) for _ in range(2)]
    cfg = WFNConfig(fix_fractions=(0.5, 1.0), epochs_per_iteration=1, first_epochs=1, max_steps_per_iteration=1)
    fix_weights(m, data, None, cfg, run_dir=d, progress=False)
    return d, cfg, data


def test_every_damaged_checkpoint_state_is_rejected(run_dir, tmp_path):
    src, _, _ = run_dir
    index = json.loads((src / checkpoint.INDEX).read_text())
    state = src / index["state_file"]
    data = state.read_bytes()
    assert {"length prefix", "JSON header: metadata"} <= set(regions(data))
    work = tmp_path / "run"
    work.mkdir()
    (work / checkpoint.INDEX).write_bytes((src / checkpoint.INDEX).read_bytes())
    cases = 0
    for label, blob in damaged_copies(data, random.Random(5)):
        (work / state.name).write_bytes(blob)
        cases += 1
        with pytest.raises(CorruptFileError, match=state.name):
            checkpoint.load(work)
    print(f"checkpoint state: {cases} damaged copies, all rejected")
    assert cases >= 150
    (work / state.name).write_bytes(data)
    checkpoint.load(work)  # the original pair still loads


def test_every_damaged_checkpoint_index_is_rejected_and_resume_loads_nothing(run_dir, tmp_path):
    src, cfg, data = run_dir
    index_bytes = (src / checkpoint.INDEX).read_bytes()
    work = tmp_path / "run"
    work.mkdir()
    state_name = json.loads(index_bytes)["state_file"]
    (work / state_name).write_bytes((src / state_name).read_bytes())
    rng = random.Random(9)
    cases = 0
    for pos in rng.sample(range(len(index_bytes)), 60) + list(range(12)) + list(range(len(index_bytes) - 12,
                                                                                      len(index_bytes))):
        for kind in ("bit", "byte"):
            blob = bytearray(index_bytes)
            if kind == "bit":
                blob[pos] ^= 1 << rng.randrange(8)
            else:
                blob[pos] = rng.choice([v for v in range(256) if v != index_bytes[pos]])
            (work / checkpoint.INDEX).write_bytes(bytes(blob))
            cases += 1
            with pytest.raises(CorruptFileError, match="checkpoint.json"):
                checkpoint.load(work)
    for cut in (0, 1, len(index_bytes) // 2, len(index_bytes) - 1):
        (work / checkpoint.INDEX).write_bytes(index_bytes[:cut])
        cases += 1
        with pytest.raises(CorruptFileError, match="checkpoint.json"):
            checkpoint.load(work)
    print(f"checkpoint index: {cases} damaged copies, all rejected")
    assert cases >= 160
    # through the trainer: a damaged index fails before anything is restored into the model
    blob = bytearray(index_bytes)
    blob[len(blob) // 2] ^= 0x04
    (work / checkpoint.INDEX).write_bytes(bytes(blob))
    m = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    before = _state(m)
    with pytest.raises(CorruptFileError, match="checksum mismatch"):
        fix_weights(m, data, None, cfg, run_dir=work, resume=True, progress=False)
    assert _unchanged(m, before)


def test_every_damaged_model_file_is_rejected(tmp_path):
    from wfn_kernels.workflows.models import build

    m = build("small-cnn")
    src = tmp_path / "model.safetensors"
    save_model(m, src, "small-cnn", True)
    model, _, meta = load_saved_model(src)
    assert model is not None and meta["wfn_model"] == "small-cnn"
    data = src.read_bytes()
    bad = tmp_path / "bad.safetensors"
    cases = 0
    for label, blob in damaged_copies(data, random.Random(3), exhaustive_prefix=False):
        bad.write_bytes(blob)
        cases += 1
        with pytest.raises(CorruptFileError, match="bad.safetensors"):
            load_saved_model(bad)
    print(f"model file: {cases} damaged copies, all rejected")
    assert cases >= 200


def test_damage_message_names_the_part(tmp_path):
    """Not just rejected: the message says which part changed."""
    src = tmp_path / "m.wfn.safetensors"
    m = tiny_model()
    wk.convert(m, codebook=CB)
    wk.save_packed(m, src, CB)
    data = src.read_bytes()
    r = regions(data)
    expect = {"length prefix": r"length prefix|JSON header", "JSON header: metadata": r"metadata|JSON header",
              "tensor 4.packed": r"tensor '4.packed'", "tensor 1.running_mean": r"tensor '1.running_mean'"}
    for region, pattern in expect.items():
        blob = bytearray(data)
        blob[r[region][len(r[region]) // 2]] ^= 0x01
        bad = tmp_path / "bad.safetensors"
        bad.write_bytes(bytes(blob))
        with pytest.raises(CorruptFileError, match=pattern):
            read_packed(bad)
