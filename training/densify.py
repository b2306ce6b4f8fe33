"""Densification: gsplat's DefaultStrategy with the 3DGS schedule, without per-step host syncs."""
from __future__ import annotations

import torch


def make_strategy(opt, verbose: bool = False):
    """gsplat's DefaultStrategy with the 3DGS schedule, and two changes:

    * the opacity reset that 1.5.3 never fires (its ``step % reset_every == 0 & step > 0`` test is
      always False) is done by hand;
    * the running screen-space statistics are accumulated with fixed-size masked sums instead of
      ``torch.where(sel)`` + ``index_add_`` (a host-device sync every iteration while densifying).
      Same numbers: each visible Gaussian gets its gradient norm and a count of one, the others 0.
    """
    from gsplat.strategy import DefaultStrategy
    from gsplat.strategy.ops import reset_opa

    class Densifier(DefaultStrategy):
        def step_post_backward(self, params, optimizers, state, step, info, packed=False):
            super().step_post_backward(params, optimizers, state, step, info, packed=packed)
            if 0 < step < self.refine_stop_iter and step % self.reset_every == 0:
                reset_opa(params=params, optimizers=optimizers, state=state, value=self.prune_opa * 2.0)

        def _update_state(self, params, state, info, packed=False):
            if packed:
                return super()._update_state(params, state, info, packed=packed)
            update_screen_stats(state, info, len(params["means"]), key=self.key_for_gradient,
                                absgrad=self.absgrad, with_radii=self.refine_scale2d_stop_iter > 0)

    return Densifier(
        grow_grad2d=opt.densify_grad_threshold, grow_scale3d=opt.percent_dense,
        refine_start_iter=opt.densify_from_iter, refine_stop_iter=opt.densify_until_iter,
        reset_every=opt.opacity_reset_interval, refine_every=opt.densification_interval,
        verbose=verbose)


@torch.no_grad()
def update_screen_stats(state: dict, info: dict, n: int, *, key: str = "means2d", absgrad: bool = False,
                        with_radii: bool = False) -> None:
    """DefaultStrategy's running statistics (unpacked rasterisation), sync-free.

    info: ``radii`` [C, N, 2] (0 = culled), ``key`` [C, N, 2] with ``.grad`` (``.absgrad``), ``width``,
    ``height``, ``n_cameras``. state: ``grad2d`` [N], ``count`` [N] (created here), ``radii`` [N].
    """
    grads = (info[key].absgrad if absgrad else info[key].grad).clone()  # [C, N, 2]
    grads[..., 0] *= info["width"] / 2.0 * info["n_cameras"]  # Python scalars: no host-to-device copy
    grads[..., 1] *= info["height"] / 2.0 * info["n_cameras"]
    g = grads
    sel = (info["radii"] > 0.0).all(dim=-1)  # [C, N]
    if state["grad2d"] is None:
        state["grad2d"] = torch.zeros(n, device=g.device)
    if state["count"] is None:
        state["count"] = torch.zeros(n, device=g.device)
    norms = torch.where(sel, grads.norm(dim=-1), 0.0)  # [C, N]
    state["grad2d"] += norms.sum(0)
    state["count"] += sel.sum(0).to(state["count"].dtype)
    if with_radii:
        if state["radii"] is None:
            state["radii"] = torch.zeros(n, device=g.device)
        r = torch.where(sel, info["radii"].max(dim=-1).values.float(), 0.0) / float(max(info["width"], info["height"]))
        state["radii"] = torch.maximum(state["radii"], r.max(0).values)
