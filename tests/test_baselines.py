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


# ----- min_cluster_size tuned against the training pseudo-masks (no GT) -----------------------------

def _planted_views(n_views=3, h=8, per_obj=12, objects=4, seed=0):
    """Views whose pixels carry embeddings of 4 objects, each object drawn as TWO tight sub-blobs
    (left and right half of its region), objects far apart. Pseudo-mask ids are shuffled per view
    (inconsistent across views, as a 2D segmenter's). The right min_cluster_size keeps each
    object whole: a small one splits objects in two (IoU 0.5, no match), a huge one merges them."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[0.1, 0.1, 0.1], [0.9, 0.1, 0.9], [0.1, 0.9, 0.9], [0.9, 0.9, 0.1]])[:objects]
    half = torch.tensor([0.08, 0.0, 0.0])
    views = []
    for j in range(n_views):
        w = per_obj * objects + 6  # 6 stuff columns on the right
        emb = torch.full((h, w, 3), 0.5)
        ids = torch.zeros(h, w, dtype=torch.int64)
        order = torch.randperm(objects, generator=g) + 1 + 3 * j  # this view's pseudo ids
        for o in range(objects):
            a = o * per_obj
            emb[:, a:a + per_obj // 2] = centres[o] - half
            emb[:, a + per_obj // 2:a + per_obj] = centres[o] + half
            ids[:, a:a + per_obj] = order[o]
        emb = emb + 0.004 * torch.randn(emb.shape, generator=g)
        views.append((emb, ids != 0, ids))
    return views


def test_pseudo_mask_pq_segments_per_view():
    views = _planted_views()
    thing = [v[1] for v in views]
    ids = [v[2] for v in views]
    # a prediction consistent across views (ids unlike the masks') is perfect per view
    consistent = [(v[2] - v[2].masked_fill(v[2] == 0, 10**6).amin()).clamp_min(0) * 7 + 1 for v in views]
    assert cl.pseudo_mask_pq(consistent, thing, ids, thing) == pytest.approx(100.0)
    # merging all objects of a view into one id: thing PQ 0, stuff still 100
    merged = [torch.ones_like(i) for i in ids]
    assert cl.pseudo_mask_pq(merged, thing, ids, thing) == pytest.approx(50.0)
    # invalid pixels are not scored
    valid = [torch.zeros_like(t) for t in thing]
    for v in valid:
        v[:, :12] = True  # object 0 only
    assert cl.pseudo_mask_pq(merged, thing, ids, thing, valid) == pytest.approx(100.0)
    with pytest.raises(ValueError):
        cl.pseudo_mask_pq([], [], [], [])


def test_tuning_picks_the_size_the_planted_example_makes_best():
    pytest.importorskip("sklearn")
    views = _planted_views()
    samples = torch.cat([v[0][v[1]] for v in views])  # [1152, 3]: 144 per sub-blob, 288 per object

    def score(clusters):
        return cl.pseudo_mask_pq([clusters.assign(v[0]) for v in views], [v[1] for v in views],
                                 [v[2] for v in views], [v[1] for v in views])

    seen = []
    model, chosen, table = cl.tune_min_cluster_size(samples, [5, 250, 900], score, log=seen.append,
                                                   generator=torch.Generator().manual_seed(0))
    by_size = {r["min_cluster_size"]: r for r in table}
    assert chosen == 250 and model.n_clusters == 4
    assert by_size[250]["score"] == pytest.approx(100.0)
    assert by_size[5]["clusters"] == 8 and by_size[5]["score"] < 60  # halves: IoU 0.5 never matches
    assert by_size[900]["clusters"] <= 1 and by_size[900]["score"] < 60
    assert len(seen) == 3 and all(r["fit_seconds"] >= 0 for r in table)
    # the order given decides ties only; the best is found wherever it stands
    assert cl.tune_min_cluster_size(samples, [900, 250, 5], score)[1] == 250
    with pytest.raises(ValueError):
        cl.tune_min_cluster_size(samples, [1, 250], score)


def test_tuning_in_worker_processes_gives_the_models_of_one_process_and_of_fit_clusters():
    """workers=2: the candidates' HDBSCAN fits run in joblib's worker processes; the models, scores and choice are those of
    the in-process tuning, and the kept model is ``fit_clusters``' with the same subsample."""
    views = _planted_views()
    samples = torch.cat([v[0][v[1]] for v in views])

    def score(clusters):
        return cl.pseudo_mask_pq([clusters.assign(v[0]) for v in views], [v[1] for v in views],
                                 [v[2] for v in views], [v[1] for v in views])

    runs = {w: cl.tune_min_cluster_size(samples, [5, 250, 900], score, workers=w, max_points=1000,
                                        generator=torch.Generator().manual_seed(3)) for w in (1, 2)}
    (m1, c1, t1), (m2, c2, t2) = runs[1], runs[2]
    assert c1 == c2 == 250 and m1.n_clusters == m2.n_clusters >= 3
    assert [(r["clusters"], r["score"]) for r in t1] == [(r["clusters"], r["score"]) for r in t2]
    assert torch.equal(m1.centroids, m2.centroids) and torch.equal(m1.lo, m2.lo)
    seed = int(torch.randint(0, 2**62, (1,), generator=torch.Generator().manual_seed(3)))
    alone = cl.fit_clusters(samples, 250, max_points=1000, generator=torch.Generator().manual_seed(seed))
    assert samples.shape[0] > 1000 and torch.equal(alone.centroids, m2.centroids)
    assert all(r["fit_seconds"] > 0 for r in t2)


def test_tune_workers_defaults_to_one_per_candidate_within_the_cores(monkeypatch):
    monkeypatch.setattr(cl.os, "cpu_count", lambda: 16)
    assert cl.tune_workers(6) == 6 and cl.tune_workers(30) == 15
    monkeypatch.setattr(cl.os, "cpu_count", lambda: 2)
    assert cl.tune_workers(6) == 1  # one core left for the rest: in this process
    assert cl.tune_workers(6, 4) == 4 and cl.tune_workers(2, 8) == 2
    with pytest.raises(ValueError, match="workers must be >= 1"):
        cl.tune_workers(6, 0)


def test_fewer_than_two_points_give_no_cluster():
    pytest.importorskip("sklearn")
    assert cl.fit_clusters(torch.rand(1, 4), 5).n_clusters == 0


@pytest.mark.slow
def test_train_tunes_min_cluster_size_without_ground_truth(tmp_path):
    """train.py --method contrastive_lift on a tiny scene whose GT folders were deleted: the tuning
    scores each candidate against the training pseudo-masks and keeps the best (about a minute)."""
    import json
    import os
    import shutil
    import subprocess

    from tests.conftest import ROOT, make_scene

    pytest.importorskip("sklearn")
    scene = make_scene(str(tmp_path / "scene"), views=10, extra=("--num-points", "3000"))
    gt = [d for d in os.listdir(scene) if d.startswith("rs_")]
    assert gt  # the generator's GT folders (rs_instance, rs_semantics)
    for d in gt:
        shutil.rmtree(os.path.join(scene, d))
    model = str(tmp_path / "model")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "-s", scene, "-m", model, "--quiet",
                           "--method", "contrastive_lift", "--iterations", "30", "--init_points", "2000",
                           "--opacity_reset_interval", "100000", "--cluster_tune_sizes", "5", "20", "400"],
                          cwd=ROOT, capture_output=True, text=True, timeout=900, env=dict(os.environ, CUDA_VISIBLE_DEVICES=""))
    assert proc.returncode == 0, proc.stderr[-2000:]
    stats = json.load(open(os.path.join(model, "train_stats.json")))
    table = stats["cluster_tuning"]
    assert [r["min_cluster_size"] for r in table] == [5, 20, 400]
    best = max(table, key=lambda r: r["score"])
    assert stats["min_cluster_size"] == best["min_cluster_size"] and stats["clusters"] == best["clusters"]
    assert all(0.0 <= r["score"] <= 100.0 for r in table) and stats["cluster_tune_seconds"] >= 0
    assert os.path.isfile(os.path.join(model, "point_cloud", "iteration_30", "clusters.pt"))
