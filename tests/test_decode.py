"""Tests of segmentation/decode.py."""

import pytest
import torch

from segmentation.decode import codes_to_instance_ids, colorize_ids, decode_codes, gaussian_labels


def test_corners_decode_to_their_code():
    D = 5
    codes = torch.arange(2**D)
    corners = ((codes[:, None] >> torch.arange(D)) & 1).float()  # [32, D]
    assert torch.equal(decode_codes(corners), codes)
    # Slightly inside the cube still decodes the same.
    assert torch.equal(decode_codes(0.1 + 0.8 * corners), codes)
    assert decode_codes(torch.full((2, 3, D), 0.5)).eq(0).all()  # 0.5 is not > 0.5


def test_decode_equals_threshold_bits():
    g = torch.Generator().manual_seed(0)
    V = torch.randn(7, 9, 12, generator=g) * 3
    bits = torch.sigmoid(V) > 0.5
    manual = sum(bits[..., k].long() << k for k in range(12))
    assert torch.equal(decode_codes(torch.sigmoid(V)), manual)
    assert decode_codes(torch.sigmoid(V)).max() < 2**12


def test_gaussian_labels_consistent():
    g = torch.Generator().manual_seed(1)
    v = torch.randn(1000, 12, generator=g)
    v[0] = torch.tensor([1e-9, -1e-9] * 6)  # below float32 resolution of sigmoid around 0.5
    lab = gaussian_labels(v)
    assert torch.equal(lab, decode_codes(torch.sigmoid(v)))
    big = v.abs().min(1).values > 1e-6
    by_sign = ((v > 0).long() << torch.arange(12)).sum(1)
    assert torch.equal(lab[big], by_sign[big])
    assert lab[0].item() == 0
    with pytest.raises(ValueError):
        gaussian_labels(v[0])


def test_codes_to_instance_ids():
    codes = torch.tensor([[0, 5], [4095, 7]])
    thing = torch.tensor([[True, False], [True, True]])
    assert codes_to_instance_ids(codes).tolist() == [[1, 6], [4096, 8]]
    assert codes_to_instance_ids(codes, thing).tolist() == [[1, 0], [4096, 8]]
    with pytest.raises(ValueError):
        codes_to_instance_ids(torch.tensor([65535]))  # D = 16 all-ones overflows uint16
    assert codes_to_instance_ids(torch.tensor([65535]), max_id=None).item() == 65536


def test_colorize_ids_stable_distinct_black_zero():
    ids = torch.arange(0, 2001).reshape(1, -1)
    rgb = colorize_ids(ids)
    assert rgb.shape == (1, 2001, 3) and rgb.dtype == torch.uint8
    assert rgb[0, 0].tolist() == [0, 0, 0]
    assert (rgb[0, 1:] >= 48).all()
    assert torch.equal(colorize_ids(ids), rgb)
    assert torch.equal(colorize_ids(torch.tensor([[17]]))[0, 0], rgb[0, 17])
    distinct = torch.unique(rgb[0, 1:], dim=0).shape[0]
    assert distinct >= 1995  # hash collisions are rare
    # Neighbouring ids look different (not a smooth ramp).
    diff = (rgb[0, 2:].int() - rgb[0, 1:-1].int()).abs().sum(1)
    assert diff.float().median() > 100


# ----------------------------------------------------------------------------- post-processing


def test_split_disconnected_codes():
    from segmentation.neighbors import neighbor_graph
    from segmentation.postprocess import split_disconnected_codes

    g = torch.Generator().manual_seed(0)
    # Code 5: two far-apart clusters (60 and 80 Gaussians) + a 3-Gaussian speck; code 2: one cluster.
    a = torch.rand(60, 3, generator=g) * 0.3
    b = torch.rand(80, 3, generator=g) * 0.3 + 5.0
    speck = torch.rand(3, 3, generator=g) * 0.05 + 10.0
    c = torch.rand(70, 3, generator=g) * 0.3 + torch.tensor([0.0, 0.0, 2.0])
    means = torch.cat([a, b, speck, c])
    codes = torch.tensor([5] * 60 + [5] * 80 + [5] * 3 + [2] * 70)
    edges = neighbor_graph(means, radius2=0.04, k=16)
    out = split_disconnected_codes(codes, edges, min_gaussians=10)
    assert out[60:140].eq(5).all()  # largest group of code 5 keeps it
    assert out[140:143].eq(5).all()  # too small to be an object
    assert out[:60].eq(6).all()  # the other group gets a fresh label max(code) + 1
    assert out[143:].eq(2).all()
    # Without separation nothing changes.
    assert torch.equal(split_disconnected_codes(codes[143:], neighbor_graph(c, 0.04, 16)), codes[143:])


def test_drop_small_segments():
    from segmentation.postprocess import drop_small_segments

    ids = torch.tensor([[1, 1, 1, 9], [1, 1, 70000, 9], [0, 0, 0, 3]])
    assert drop_small_segments(ids, 2).tolist() == [[1, 1, 1, 9], [1, 1, 0, 9], [0, 0, 0, 0]]
    assert drop_small_segments(ids, 3).tolist() == [[1, 1, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]]


def test_emb_dim_limited_to_what_uint16_files_hold(tiny_scene, tmp_path, capsys):
    import numpy as np

    import train
    from segmentation.decode import MAX_EMB_DIM
    from utils.image_io import load_label, save_label_png

    assert MAX_EMB_DIM == 15
    top = codes_to_instance_ids(torch.tensor([2 ** MAX_EMB_DIM - 1]))  # all ones: the largest id
    save_label_png(str(tmp_path / "id.png"), top.numpy().astype(np.uint16).reshape(1, 1))
    assert int(load_label(str(tmp_path / "id.png"))[0, 0]) == 2 ** 15  # written and read back unchanged
    with pytest.raises(ValueError):
        codes_to_instance_ids(torch.tensor([2 ** 16 - 1]))  # d = 16 would wrap to 0
    rc = train.main(["-s", tiny_scene, "-m", str(tmp_path / "m"), "--emb_dim", "16", "--iterations", "1",
                     "--quiet", "--test_iterations", "-1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--emb_dim 16" in err[0] and "15" in err[0]
