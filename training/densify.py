"""Densification: gsplat's DefaultStrategy with the 3DGS schedule."""
from __future__ import annotations


def make_strategy(opt, verbose: bool = False):
    """gsplat's DefaultStrategy with the 3DGS schedule, and the opacity reset that 1.5.3 never
    fires (its ``step % reset_every == 0 & step > 0`` test is always False) done by hand."""
    from gsplat.strategy import DefaultStrategy
    from gsplat.strategy.ops import reset_opa

    class Densifier(DefaultStrategy):
        def step_post_backward(self, params, optimizers, state, step, info, packed=False):
            super().step_post_backward(params, optimizers, state, step, info, packed=packed)
            if 0 < step < self.refine_stop_iter and step % self.reset_every == 0:
                reset_opa(params=params, optimizers=optimizers, state=state, value=self.prune_opa * 2.0)

    return Densifier(
        grow_grad2d=opt.densify_grad_threshold, grow_scale3d=opt.percent_dense,
        refine_start_iter=opt.densify_from_iter, refine_stop_iter=opt.densify_until_iter,
        reset_every=opt.opacity_reset_interval, refine_every=opt.densification_interval,
        verbose=verbose)
