"""Contrastive-Lift on 3DGS: labels by clustering rendered embeddings (paper Tab. 5 baseline).

Training uses ``segmentation.losses.cluster_loss`` on raw (un-thresholded) embeddings; after
training, ``fit_clusters`` runs once on a subsample of training-view pixel embeddings:
  1. uniform subsample to ``max_points`` (about 50k);
  2. 3-sigma filter: drop samples with any channel farther than 3 std from the channel mean;
  3. per-channel min-max rescale to [0, 1] (statistics of the filtered samples);
  4. HDBSCAN (scikit-learn, ``min_samples`` 1, ``min_cluster_size`` tuned per dataset);
  5. centroid of each cluster (in the rescaled space); HDBSCAN noise is dropped.
Then every pixel of every view goes to its nearest centroid (``ClusterModel.assign``), id = cluster
index + 1 so that 0 stays "stuff". The clustering time counts as training time.

``min_cluster_size`` is "tuned per dataset" in Contrastive-Lift's protocol; GT may not be used for
that. ``tune_min_cluster_size`` fits each candidate and keeps the one with the best PQ against the
2D pseudo-masks of training views (``pseudo_mask_pq``): the segmenter's masks the method was
trained on, never GT. Those masks are consistent within a view only, so a segment there is a
(view, id) pair on both sides: the score punishes clusters that split or merge objects within a
view, and cannot see two objects merged across views that never show both.

scikit-learn is an optional dependency (``pip install scikit-learn``, extra ``[baselines]``).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import Tensor

__all__ = ["ClusterModel", "fit_clusters", "hdbscan_labels", "pseudo_mask_pq", "tune_min_cluster_size", "tune_workers"]

FORMAT_VERSION = 1


def _hdbscan_class():
    try:
        from sklearn.cluster import HDBSCAN
    except ImportError as err:  # optional dependency: say how to get it
        raise ImportError("the Contrastive-Lift baseline needs scikit-learn >= 1.3: pip install scikit-learn") from err
    return HDBSCAN


@dataclass
class ClusterModel:
    """Nearest-centroid labeller. Convention: centroids live in the rescaled space ``(x - lo) / scale``."""

    centroids: Tensor  # [C, D] float32
    lo: Tensor  # [D] per-channel minimum of the filtered samples
    scale: Tensor  # [D] per-channel (max - min), clamped away from 0

    @property
    def n_clusters(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def dim(self) -> int:
        return int(self.lo.shape[0])

    def rescale(self, emb: Tensor) -> Tensor:
        """[..., D] -> [..., D] in the clustering space."""
        return (emb - self.lo.to(emb)) / self.scale.to(emb)

    @torch.no_grad()
    def assign(self, emb: Tensor, chunk: int = 1 << 18) -> Tensor:
        """Nearest centroid of each embedding.

        Args:
            emb: [..., D] float embeddings (the same space as the samples given to ``fit_clusters``).
            chunk: rows per distance block (memory: chunk x C floats).
        Returns:
            [...] int64 ids: cluster index + 1; all 0 if there is no cluster.
        """
        if emb.shape[-1] != self.dim:
            raise ValueError(f"ClusterModel.assign: expected last dim {self.dim}, got {tuple(emb.shape)}")
        lead = emb.shape[:-1]
        if self.n_clusters == 0:
            return torch.zeros(lead, dtype=torch.int64, device=emb.device)
        x = self.rescale(emb.reshape(-1, self.dim).float())  # [M, D]
        c = self.centroids.to(x)  # [C, D]
        c2 = c.square().sum(-1)  # [C]
        out = torch.empty(x.shape[0], dtype=torch.int64, device=x.device)
        for s in range(0, x.shape[0], chunk):  # chunks of pixels, not single pixels
            xb = x[s : s + chunk]  # [B, D]
            d2 = c2[None, :] - 2.0 * (xb @ c.T)  # [B, C]; ||x||^2 is the same for every centroid
            out[s : s + chunk] = d2.argmin(1) + 1
        return out.reshape(lead)

    def state_dict(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "centroids": self.centroids.detach().cpu(),
            "lo": self.lo.detach().cpu(),
            "scale": self.scale.detach().cpu(),
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> "ClusterModel":
        version = state.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(f"ClusterModel: unsupported format_version {version!r} (expected {FORMAT_VERSION})")
        return cls(centroids=state["centroids"].float(), lo=state["lo"].float(), scale=state["scale"].float())

    def save(self, path: str | Path) -> None:
        torch.save(self.state_dict(), Path(path))

    @classmethod
    def load(cls, path: str | Path) -> "ClusterModel":
        return cls.from_state_dict(torch.load(Path(path), map_location="cpu", weights_only=True))


def _prepared(emb_samples: Tensor, max_points: int, generator: torch.Generator | None, sigma: float
              ) -> tuple[Tensor, Tensor, Tensor]:
    """Steps 1-3 of ``fit_clusters``: (the rescaled samples [M', D] float64 in [0, 1], lo [D], scale [D])."""
    if emb_samples.dim() != 2 or emb_samples.shape[0] == 0:
        raise ValueError(f"fit_clusters: emb_samples must be a non-empty [M,D] tensor, got {tuple(emb_samples.shape)}")
    x = emb_samples.detach().to("cpu", torch.float64)  # [M, D]
    if not torch.isfinite(x).all():
        raise ValueError("fit_clusters: emb_samples contain NaN or inf")
    if x.shape[0] > max_points:
        x = x[torch.randperm(x.shape[0], generator=generator)[:max_points]]
    mu, sd = x.mean(0), x.std(0, unbiased=False)  # [D]
    keep = ((x - mu).abs() <= sigma * sd).all(1)  # [M]; sd = 0 keeps exact matches only
    if keep.any():
        x = x[keep]
    lo = x.min(0).values  # [D]
    scale = (x.max(0).values - lo).clamp_min(1e-12)  # [D]
    return (x - lo) / scale, lo, scale


def hdbscan_labels(xs, min_cluster_size: int, min_samples: int = 1):
    """Step 4 of ``fit_clusters`` on a float64 numpy array [M, D]: (labels [M] int64 numpy, -1 = noise; seconds
    the fit took). A module-level function of numpy arrays, so that tuning can run it in worker processes."""
    import numpy as np

    t0 = time.perf_counter()
    if xs.shape[0] < 2:  # HDBSCAN needs two points (e.g. a model with almost no opaque pixel): no cluster
        return np.full(xs.shape[0], -1, dtype=np.int64), time.perf_counter() - t0
    hdb = _hdbscan_class()(min_cluster_size=min_cluster_size, min_samples=min_samples)
    if "copy" in hdb.get_params():  # scikit-learn >= 1.5; our array must stay intact (centroids below)
        hdb.set_params(copy=True)
    return hdb.fit(xs).labels_.astype(np.int64), time.perf_counter() - t0


def _from_labels(xs: Tensor, labels: Tensor, lo: Tensor, scale: Tensor) -> ClusterModel:
    """Step 5 of ``fit_clusters``: the centroid of each cluster (noise dropped) as a ClusterModel."""
    C = int(labels.max()) + 1 if labels.numel() else 0
    D = xs.shape[1]
    if C > 0:
        member = labels >= 0
        lab = labels[member]
        sums = torch.zeros(C, D, dtype=torch.float64).index_add_(0, lab, xs[member])  # [C, D]
        centroids = sums / torch.bincount(lab, minlength=C).clamp_min(1)[:, None].to(sums)
    else:
        centroids = torch.zeros(0, D, dtype=torch.float64)
    return ClusterModel(centroids=centroids.float(), lo=lo.float(), scale=scale.float())


def fit_clusters(
    emb_samples: Tensor,
    min_cluster_size: int,
    min_samples: int = 1,
    max_points: int = 50000,
    generator: torch.Generator | None = None,
    *,
    sigma: float = 3.0,
) -> ClusterModel:
    """Cluster sampled pixel embeddings with HDBSCAN and return a nearest-centroid labeller.

    Args:
        emb_samples: [M, D] float pixel embeddings (e.g. from training views, thing pixels only).
        min_cluster_size, min_samples: HDBSCAN parameters.
        max_points: uniform subsample size before filtering.
        generator: CPU torch.Generator for the subsample.
        sigma: outlier filter width in standard deviations.
    Returns:
        ClusterModel on the CPU (move inputs of ``assign`` anywhere; it follows them).
    """
    if min_cluster_size < 2:
        raise ValueError(f"fit_clusters: min_cluster_size must be >= 2, got {min_cluster_size}")
    _hdbscan_class()  # the missing-dependency message before any work
    xs, lo, scale = _prepared(emb_samples, max_points, generator, sigma)
    labels, _ = hdbscan_labels(xs.numpy(), min_cluster_size, min_samples)
    return _from_labels(xs, torch.from_numpy(labels), lo, scale)


def pseudo_mask_pq(pred_ids: Sequence[Tensor], pred_thing: Sequence[Tensor], mask_ids: Sequence[Tensor],
                   mask_thing: Sequence[Tensor], valid: Sequence[Tensor | None] | None = None) -> float:
    """PQ (x100) of predicted instance ids against per-view pseudo-masks, segments per view.

    Args (one entry per view, each [H, W] on any device, the same shape within a view):
        pred_ids: int predicted instance ids (cluster index + 1; 0 = no cluster).
        pred_thing: bool, the pixel is predicted to be an object (semantic head or coverage).
        mask_ids: int ids of the view's 2D pseudo-mask (consistent within the view only).
        mask_thing: bool, the pseudo-mask says object (id present and a thing class).
        valid: optional bool, pixels to score (default all).
    Returns the PQ of the things-vs-stuff scoring of utils.panoptic_eval (Messy-Rooms classes)
    with ids tagged by view on both sides, so segments are (view, class, id).
    """
    from utils.panoptic_eval import MESSY, panoptic_quality

    if not (len(pred_ids) == len(pred_thing) == len(mask_ids) == len(mask_thing)) or not pred_ids:
        raise ValueError("pseudo_mask_pq: give the same non-zero number of views in every argument")
    top_p = max(int(p.max()) for p in pred_ids) + 1  # id stride per view
    top_m = max(int(m.max()) for m in mask_ids) + 1
    cols = ([], [], [], [])
    for j, views in enumerate(zip(pred_ids, pred_thing, mask_ids, mask_thing)):
        pi, pt, mi, mt = (v.detach().cpu() for v in views)
        keep = torch.ones_like(pt, dtype=torch.bool) if valid is None or valid[j] is None else valid[j].cpu().bool()
        pi, pt, mi, mt = pi.long()[keep], pt.bool()[keep], mi.long()[keep], mt.bool()[keep]
        cols[0].append(pt.long())
        cols[1].append(torch.where(pt, pi + j * top_p, torch.zeros_like(pi)))  # stuff id 0, as the scorer wants
        cols[2].append(mt.long())
        cols[3].append(torch.where(mt, mi + j * top_m, torch.zeros_like(mi)))
    ps, pi, gs, gi = (torch.cat(c) for c in cols)
    return float(panoptic_quality(ps, pi, gs, gi, MESSY)["pq"])


def tune_workers(candidates: int, workers: int | None = None) -> int:
    """Worker processes for ``tune_min_cluster_size``: ``workers`` if given (1: in this process), else one per
    candidate up to the cores but one (HDBSCAN's fit holds the GIL, so threads would not help)."""
    if workers is not None:
        if workers < 1:
            raise ValueError(f"tune_min_cluster_size: workers must be >= 1, got {workers}")
        return min(workers, max(1, candidates))
    return max(1, min(candidates, (os.cpu_count() or 1) - 1))


def tune_min_cluster_size(emb_samples: Tensor, candidates: Sequence[int], score: Callable[[ClusterModel], float],
                          *, log: Callable[[str], None] | None = None, workers: int | None = None,
                          min_samples: int = 1, max_points: int = 50000, generator: torch.Generator | None = None,
                          sigma: float = 3.0) -> tuple[ClusterModel, int, list[dict]]:
    """Fits ``fit_clusters`` once per candidate ``min_cluster_size`` and keeps the best ``score``.

    The samples are subsampled, filtered and rescaled once (every candidate saw the same subsample before,
    too), then the candidates' HDBSCAN fits run side by side in ``workers`` processes (``tune_workers``). The
    models are those of ``fit_clusters`` with the same arguments, and are scored here, in the order given.

    Args:
        emb_samples: [M, D] as for ``fit_clusters`` (the same samples for every candidate).
        candidates: min_cluster_size values (each >= 2), tried in the order given; ties keep the first.
        score: ClusterModel -> number, higher is better (PQ against the training pseudo-masks;
            never ground truth).
        workers: processes for the fits (None: ``tune_workers``; 1: one after another in this process).
        min_samples, max_points, generator, sigma: as for ``fit_clusters``; give a seeded ``generator``
            for a reproducible subsample.
    Returns:
        (the chosen ClusterModel, its min_cluster_size, one dict per candidate with
        ``min_cluster_size``, ``clusters``, ``score`` and ``fit_seconds``: the preparation, that candidate's
        HDBSCAN fit as timed where it ran, and its centroids).
    """
    cands = [int(c) for c in candidates]
    if not cands or min(cands) < 2:
        raise ValueError(f"tune_min_cluster_size: give candidates >= 2, got {list(candidates)}")
    _hdbscan_class()
    seed = int(torch.randint(0, 2**62, (1,), generator=generator)) if generator is not None else 0
    t0 = time.perf_counter()
    xs, lo, scale = _prepared(emb_samples, max_points, torch.Generator().manual_seed(seed), sigma)
    prep_s = time.perf_counter() - t0
    xs_np = xs.numpy()
    n_workers = tune_workers(len(cands), workers)
    if n_workers > 1:
        # joblib (scikit-learn's own dependency), loky backend: fresh interpreters, so nothing of the parent's CUDA
        # or OpenMP state is inherited, and a caller's script needs no `if __name__ == "__main__"` guard
        from joblib import Parallel, delayed

        fits = Parallel(n_jobs=n_workers, backend="loky")(delayed(hdbscan_labels)(xs_np, c, min_samples) for c in cands)
    else:
        fits = (hdbscan_labels(xs_np, c, min_samples) for c in cands)
    best, table = None, []
    for c, (labels, hdb_s) in zip(cands, fits):
        t1 = time.perf_counter()
        model = _from_labels(xs, torch.from_numpy(labels), lo, scale)
        fit_s = prep_s + hdb_s + time.perf_counter() - t1
        value = float(score(model))
        table.append({"min_cluster_size": c, "clusters": model.n_clusters, "score": value, "fit_seconds": fit_s})
        if log is not None:
            log(f"min_cluster_size {c}: {model.n_clusters} clusters, PQ vs pseudo-masks {value:.2f} ({fit_s:.1f} s)")
        if best is None or value > best[2]:
            best = (model, c, value)
    return best[0], best[1], table
