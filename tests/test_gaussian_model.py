import argparse

import numpy as np
import pytest
import torch

from arguments import load_cfg_args, save_cfg_args
from scene.gaussian_model import GaussianModel, knn_mean_sq_dist
from utils.ply import PlyError, read_ply, write_ply


def _model(n=64, feats=None, seed=0):
    rng = np.random.default_rng(seed)
    m = GaussianModel.from_points(rng.random((n, 3), dtype=np.float32), rng.random((n, 3), dtype=np.float32),
                                  features=feats or {}, generator=torch.Generator().manual_seed(seed))
    g = torch.Generator().manual_seed(seed + 1)
    for p in m.params.values():  # make every value distinctive
        p.data.add_(torch.randn(p.shape, generator=g))
    return m


def test_ply_round_trip_is_bit_exact(tmp_path):
    m = _model(feats={"embedding": 12, "semantic": 22})
    path = str(tmp_path / "pc.ply")
    m.save_ply(path, labels={"instance_label": torch.arange(64) * 3})
    back = GaussianModel.load_ply(path)
    assert set(back.params.keys()) == set(m.params.keys())
    for k, v in m.params.items():
        assert torch.equal(back.params[k].detach(), v.detach()), k
    assert back.max_sh_degree == 3
    assert torch.equal(back.labels["instance_label"], torch.arange(64) * 3)


def test_ply_property_order_is_3dgs(tmp_path):
    m = _model(feats={"embedding": 2})
    path = str(tmp_path / "pc.ply")
    m.save_ply(path)
    names = list(read_ply(path))
    expected = (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
                + [f"f_rest_{i}" for i in range(45)] + ["opacity", "scale_0", "scale_1", "scale_2",
                                                         "rot_0", "rot_1", "rot_2", "rot_3", "embedding_0", "embedding_1"])
    assert names == expected
    with open(path, "rb") as f:
        assert f.read(80).startswith(b"ply\nformat binary_little_endian 1.0\nelement vertex 64\n")


def test_f_rest_is_channel_major_like_3dgs(tmp_path):
    m = _model(n=4)
    path = str(tmp_path / "pc.ply")
    m.save_ply(path)
    cols = read_ply(path)
    shN = m.params["shN"].detach().numpy()  # [N, 15, 3]
    # 3DGS stores all 15 red coefficients first, then green, then blue.
    assert np.array_equal(cols["f_rest_0"], shN[:, 0, 0])
    assert np.array_equal(cols["f_rest_1"], shN[:, 1, 0])
    assert np.array_equal(cols["f_rest_15"], shN[:, 0, 1])


def test_initial_scales_from_three_nearest_neighbours():
    pts = np.array([[0, 0, 0], [1, 0, 0], [0, 2, 0], [0, 0, 3], [10, 10, 10]], np.float32)
    d2 = knn_mean_sq_dist(pts)
    assert d2[0] == pytest.approx((1 + 4 + 9) / 3)
    m = GaussianModel.from_points(pts, None)
    assert torch.allclose(m.get_scales()[0], torch.full((3,), float(np.sqrt(14 / 3))))
    assert torch.allclose(m.get_opacities(), torch.full((5,), 0.1))


def test_foreign_ply_errors_and_extras(tmp_path):
    path = str(tmp_path / "points.ply")
    write_ply(path, {"x": np.zeros(3, np.float32), "y": np.zeros(3, np.float32)})
    with pytest.raises(PlyError, match="not a Gaussian splat PLY"):
        GaussianModel.load_ply(path)
    bad = tmp_path / "bad.ply"
    bad.write_bytes(b"hello")
    with pytest.raises(PlyError, match="not a PLY file"):
        read_ply(str(bad))


def test_state_dict_round_trip():
    m = _model(feats={"embedding": 4})
    m.active_sh_degree = 2
    back = GaussianModel.from_state_dict(m.state_dict())
    assert back.active_sh_degree == 2
    for k in m.params:
        assert torch.equal(back.params[k], m.params[k])


def test_cfg_args_round_trip_without_eval(tmp_path):
    ns = argparse.Namespace(source_path="/x/y", resolution=-1, eval=True, seg_dir=None, lr=1e-3, its=[1, 2])
    save_cfg_args(str(tmp_path), ns)
    assert (tmp_path / "cfg_args").read_text().startswith("Namespace(")
    assert vars(load_cfg_args(str(tmp_path))) == vars(ns)
    (tmp_path / "cfg_args").write_text("Namespace(a=__import__('os').system('true'))")
    with pytest.raises(ValueError, match="unreadable cfg_args"):
        load_cfg_args(str(tmp_path))
