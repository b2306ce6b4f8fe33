"""Tests of the Contrastive-Lift clustering baseline (segmentation/baselines/contrastive_lift.py)."""

import sys

import pytest
import torch

from segmentation.baselines import contrastive_lift as cl


def blobs(n=400, D=12, seed=0):
    """3 well-separated Gaussian blobs (std 0.03) at different corners of [0,1]^D plus labels 0..2."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.zeros(3, D)
    centres[1, : D // 2] = 1.0
    centres[2, D // 2 :] = 1.0
    labels = torch.arange(3).repeat_interleave(n)
    x = centres[labels] + 0.03 * torch.randn(3 * n, D, generator=g)
    return x, labels


@pytest.fixture(autouse=True)
def _need_sklearn(request):
    if request.node.name != "test_missing_sklearn_message":
        pytest.importorskip("sklearn")


def test_three_blobs_recovered():
    x, labels = blobs()
    outliers = torch.full((5, 12), 40.0)  # removed by the 3-sigma filter, would squash min-max
    model = cl.fit_clusters(torch.cat([x, outliers]), min_cluster_size=50, generator=torch.Generator().manual_seed(0))
    assert model.n_clusters == 3
    assert model.scale.max() < 2.0  # the outliers did not enter the rescale
    ids = model.assign(x)
    assert ids.min() >= 1 and ids.max() <= 3
    # Each blob maps to exactly one id, and the three ids differ.
    per_blob = [ids[labels == b].unique().tolist() for b in range(3)]
    assert all(len(u) == 1 for u in per_blob)
    assert len({u[0] for u in per_blob}) == 3
    # Shape is kept and chunking does not change the answer.
    img = x[:600].reshape(20, 30, 12)
    assert torch.equal(model.assign(img, chunk=7), ids[:600].reshape(20, 30))


def test_subsample_deterministic_and_roundtrip(tmp_path):
    x, _ = blobs(n=2000, seed=1)
    m1 = cl.fit_clusters(x, min_cluster_size=50, max_points=900, generator=torch.Generator().manual_seed(5))
    m2 = cl.fit_clusters(x, min_cluster_size=50, max_points=900, generator=torch.Generator().manual_seed(5))
    assert m1.n_clusters == 3 and torch.equal(m1.centroids, m2.centroids)
    path = tmp_path / "clusters.pt"
    m1.save(path)
    m3 = cl.ClusterModel.load(path)
    assert torch.equal(m3.centroids, m1.centroids) and torch.equal(m3.assign(x), m1.assign(x))
    bad = m1.state_dict()
    bad["format_version"] = 99
    with pytest.raises(ValueError):
        cl.ClusterModel.from_state_dict(bad)


def test_no_cluster_gives_stuff_and_bad_input():
    empty = cl.ClusterModel(centroids=torch.zeros(0, 4), lo=torch.zeros(4), scale=torch.ones(4))
    assert empty.assign(torch.rand(3, 5, 4)).eq(0).all()
    with pytest.raises(ValueError):
        empty.assign(torch.rand(3, 5))
    with pytest.raises(ValueError):
        cl.fit_clusters(torch.zeros(0, 4), min_cluster_size=5)


def test_missing_sklearn_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.cluster", None)  # makes `from sklearn.cluster import` fail
    with pytest.raises(ImportError, match="pip install scikit-learn"):
        cl.fit_clusters(torch.rand(10, 3), min_cluster_size=5)
