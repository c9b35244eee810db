import pytest
import torch

from wfn_kernels.format.codebook import Codebook
from wfn_kernels.format.packing import pack_codes, pack_weight, row_bytes, unpack_codes


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("k", [1, 3, 5, 8, 13, 130])
def test_roundtrip_every_width_and_odd_k(bits, k, rng):
    codes = torch.randint(0, 1 << bits, (7, k), generator=rng)
    packed = pack_codes(codes, bits)
    assert packed.dtype == torch.uint8 and packed.shape == (7, row_bytes(k, bits))
    assert torch.equal(unpack_codes(packed, bits, k), codes)


def test_layout_is_little_endian_within_byte():
    packed = pack_codes(torch.tensor([[1, 2, 3]]), 4)
    assert packed.tolist() == [[0x21, 0x03]]  # element 0 = low nibble, padding code 0
    assert pack_codes(torch.tensor([[1, 2, 3, 0, 1]]), 2).tolist() == [[0b00111001, 0b01]]


@pytest.mark.parametrize("codes,bits,msg", [
    (torch.tensor([[0, 16]]), 4, r"codes must lie in \[0, 16\)"),
    (torch.tensor([[-1, 0]]), 2, "got range"),
    (torch.tensor([0, 1]), 4, "must be 2-D"),
    (torch.tensor([[0.0]]), 4, "integer tensor"),
    (torch.tensor([[0]]), 3, r"bits must be one of \(2, 4, 8\)"),
])
def test_pack_rejects_bad_codes(codes, bits, msg):
    with pytest.raises((ValueError, TypeError), match=msg):
        pack_codes(codes, bits)


def test_unpack_rejects_wrong_row_length():
    with pytest.raises(ValueError, match="expected 3 for in_features=5 at 4 bits"):
        unpack_codes(torch.zeros(2, 4, dtype=torch.uint8), 4, 5)


def test_pack_weight_local_codebook_is_remapped_subset():
    glob = Codebook.from_values([-1.0, -0.5, 0.0, 0.25, 0.5, 1.0, 2.0], max_entries=None)
    w = torch.tensor([[0.25, 0.0, 2.0], [0.25, 2.0, 0.0]])
    pw = pack_weight(w, glob)
    assert pw.bits == 2 and pw.codebook.tolist() == [0.0, 0.25, 2.0]
    assert glob.values[pw.global_index].tolist() == pw.codebook.tolist()
    assert torch.equal(pw.unpack(), w)


def test_pack_weight_picks_narrowest_width(rng):
    vals = torch.arange(-8, 9, dtype=torch.float32) / 8  # 17 values -> 8 bits
    glob = Codebook.from_values(vals, max_terms=3)
    w = vals[torch.randint(0, 17, (5, 40), generator=rng)]
    w[0, :17] = vals
    pw = pack_weight(w, glob)
    assert pw.bits == 8 and torch.equal(pw.unpack(), w)


def test_pack_weight_off_codebook_names_layer_count_and_distance():
    glob = Codebook.from_values([0.0, 0.5, 1.0])
    w = torch.tensor([[0.5, 0.6], [1.0, 0.2]])
    with pytest.raises(ValueError, match=r"layer3\.conv: 2 of 4 weights are not on the codebook .*distance to the nearest value 0\.2"):
        pack_weight(w, glob, name="layer3.conv")
