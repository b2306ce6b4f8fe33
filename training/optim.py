"""Optimisers of the per-Gaussian parameters (one per parameter, as gsplat's strategies need) and
the 3DGS learning-rate schedule.

``--optimizer``:
  * ``adam``: ``torch.optim.Adam`` (for-each implementation); the CPU default, exact on resume.
  * ``fused``: ``torch.optim.Adam(fused=True)``, one kernel per parameter; the CUDA default.
    gsplat's densification ops replace a parameter and carry its state over (skipping the
    ``step`` entry, which fused Adam keeps as a device tensor), so it works with them unchanged.
  * ``selective``: gsplat's ``SelectiveAdam`` (CUDA only) for geometry and colour: only Gaussians
    visible in the step's view are updated. It has no bias correction (gsplat issue 604): its
    steps are (1-b1^t)/sqrt(1-b2^t) times Adam's, about 3x for the first few hundred steps and
    still 1.3x at t = 1000 for a Gaussian seen every step; compare quality before adopting it. Feature
    parameters (embedding, semantic) keep fused Adam, since L_3D moves invisible Gaussians too.
"""
from __future__ import annotations

import sys
from typing import Dict, Iterable, Optional

import torch
from torch import Tensor

from scene.gaussian_model import PACKED_KEY

OPTIMIZERS = ("auto", "adam", "fused", "selective")
GEOMETRY_AND_COLOUR = ("means", "scales", "quats", "opacities", "sh0", "shN")


def resolve_optimizer(kind: str, device: torch.device) -> str:
    """``auto`` -> ``fused`` on CUDA, ``adam`` elsewhere; ``fused``/``selective`` need CUDA."""
    if kind not in OPTIMIZERS:
        raise ValueError(f"--optimizer {kind}: must be one of {', '.join(OPTIMIZERS)}")
    if kind == "auto":
        return "fused" if device.type == "cuda" else "adam"
    if kind in ("fused", "selective") and device.type != "cuda":
        raise ValueError(f"--optimizer {kind}: needs a CUDA device; use --optimizer adam on {device.type}")
    return kind


def adam(params: Iterable, kind: str, **kwargs) -> torch.optim.Optimizer:
    """Adam with the implementation ``kind`` asks for (``selective`` -> fused for non-Gaussian params)."""
    return torch.optim.Adam(params, fused=True, **kwargs) if kind in ("fused", "selective") \
        else torch.optim.Adam(params, **kwargs)


def make_gaussian_optimizers(params, lrs: Dict[str, float], kind: str) -> Dict[str, torch.optim.Optimizer]:
    """One optimiser per parameter of ``params`` (a ParameterDict), each with one named group."""
    out = {}
    for name, p in params.items():
        group = [{"params": p, "lr": lrs[name], "name": name}]
        if kind == "selective" and name in GEOMETRY_AND_COLOUR:
            from gsplat.optimizers import SelectiveAdam

            out[name] = SelectiveAdam(group, eps=1e-15, betas=(0.9, 0.999))
        else:
            out[name] = adam(group, kind, eps=1e-15)
    return out


def visibility_from_info(info: dict) -> Optional[Tensor]:
    """[N] bool: Gaussians the rasteriser did not cull (radii > 0 in any camera), or None."""
    radii = info.get("radii")
    if radii is None:
        return None
    vis = radii > 0
    if vis.dim() == 3:  # [C, N, 2]
        vis = vis.all(-1)
    return vis.any(0) if vis.dim() == 2 else vis


def _direct_fused(opt: torch.optim.Optimizer) -> bool:
    """True for a ``torch.optim.Adam(fused=True)`` whose step ``fused_adam_step`` reproduces exactly."""
    if type(opt) is not torch.optim.Adam:
        return False
    return all(g.get("fused") and not g.get("amsgrad") and not g.get("maximize") and not g.get("capturable")
               and not g.get("differentiable") and not g.get("decoupled_weight_decay")
               and not isinstance(g["lr"], Tensor) for g in opt.param_groups)


def fused_adam_step(optimizers: Iterable[torch.optim.Optimizer]) -> None:
    """``opt.step(); opt.zero_grad(set_to_none=True)`` for fused Adam optimisers, with the host work
    of ``torch.optim.Adam.step`` cut to the kernels: ONE ``_foreach_add_`` advances every step
    counter, then one ``torch._fused_adam_`` call per set of hyperparameters (learning rate, betas, weight decay,
    eps; most groups have a learning rate of their own). Same kernels, same per-tensor arguments, same state
    layout as ``Adam(fused=True).step()``, so the
    numbers are identical and checkpoints interchange; it saves about 2 ms of Python per iteration
    with ten optimisers (benchmarks/RESULTS.md, section 8)."""
    calls, steps = [], []
    for opt in optimizers:
        for group in opt.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            for p in params:
                state = opt.state[p]
                if len(state) == 0:  # as Adam._init_group does for fused=True
                    state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                steps.append(state["step"])
            calls.append((group, params, [opt.state[p] for p in params]))
    if not calls:
        return
    torch._foreach_add_(steps, 1)
    # groups with the same hyperparameters share one call (PanopLi defaults: the scales and the packed features,
    # both lr 0.005): the kernel updates each tensor on its own, so the numbers are those of a call per group
    merged: Dict[tuple, tuple] = {}
    for group, params, states in calls:
        beta1, beta2 = group["betas"]
        key = (float(group["lr"]), float(beta1), float(beta2), float(group["weight_decay"]), float(group["eps"]))
        ps, ss = merged.setdefault(key, ([], []))
        ps.extend(params)
        ss.extend(states)
    for (lr, beta1, beta2, weight_decay, eps), (params, states) in merged.items():
        torch._fused_adam_(
            params, [p.grad for p in params], [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
            [], [s["step"] for s in states], amsgrad=False, lr=lr, beta1=beta1, beta2=beta2,
            weight_decay=weight_decay, eps=eps, maximize=False, grad_scale=None, found_inf=None)
        for p in params:
            p.grad = None


def _copy_all(dst: list, src: list) -> None:
    """dst[i].copy_(src[i]) for all i: one multi-tensor launch where torch has it (2.2 on), else a loop."""
    if hasattr(torch, "_foreach_copy_"):
        torch._foreach_copy_(dst, src)
    else:
        for d, s in zip(dst, src):
            d.copy_(s)


class AdamGraph:
    """``fused_adam_step`` as a replayed CUDA graph (``--optimizer_graph``): one launch instead of a kernel call per
    set of hyperparameters and the Python around them, for the steps after densification, when the step is
    bound by the host (RESULTS.md 30c).

    A graph holds addresses. After densification the parameters and their state stay put, but the backward's
    gradients do not: the caching allocator places them among the render's buffers, whose sizes change with the
    view (RESULTS.md 31b: keyed by the gradients' addresses, 10-15 % of a run's steps replayed). So the graph reads the
    gradients from buffers of its own, filled by one ``_foreach_copy_`` before each replay (one launch; a copy of
    the trained tensors' size, on a GPU that waits for the host anyway), and is keyed by the parameters, their
    state and the set of them with a gradient (``key``). A key seen ``CAPTURE_AFTER`` times is captured (no
    synchronisation, and the allocator's cache is left as it is); past ``MAX_GRAPHS`` keys the step stays eager.
    The scheduled learning rate (the means') is a device scalar the graph reads, refreshed (one fill) when it
    changes; the others are constants of the graph. ``replays`` / ``captures`` / ``eager`` count what happened."""

    CAPTURE_AFTER = 2
    MAX_GRAPHS = 4

    def __init__(self, scheduled: Iterable[str] = ("means",)):
        # the groups (by name) whose learning rate changes every step: the graph reads theirs from a float32 device
        # scalar, so their updates equal the eager step's to that rounding of the learning rate (the eager kernel
        # takes it in double); every other group's is a constant of the graph, checked before each replay, so
        # theirs are the same bit for bit
        self.scheduled = frozenset(scheduled)
        # key -> (CUDAGraph, [(group, lr tensor)], [(group, lr)], params, the graph's gradient buffers)
        self.graphs: Dict[tuple, tuple] = {}
        self.sightings: Dict[tuple, int] = {}
        self.replays = self.captures = self.eager = 0
        self.failed: Optional[str] = None  # a capture that failed: the rest of the run steps eagerly
        # the graphs' gradient buffers, one per parameter, shared by every graph (keys differ in which parameters
        # have a gradient, not in where they are): no more than one extra gradient's memory however many graphs
        self.grad_buffers: Dict[Tensor, Tensor] = {}

    @staticmethod
    def _calls(optimizers) -> list:
        calls = []
        for opt in optimizers:
            for group in opt.param_groups:
                params = [p for p in group["params"] if p.grad is not None]
                if params:
                    calls.append((group, params, opt))
        return calls

    @staticmethod
    def _key(calls) -> Optional[tuple]:
        key = []
        for group, params, opt in calls:
            for p in params:
                state = opt.state[p]
                if len(state) == 0:  # a first step makes the state: eager
                    return None
                key += (p.data_ptr(), state["exp_avg"].data_ptr(), state["exp_avg_sq"].data_ptr(),
                        state["step"].data_ptr())
            key.append(id(group))
        return tuple(key)

    def step(self, optimizers) -> None:
        """Steps and clears the fused Adam optimisers ``optimizers`` (all ``_direct_fused``), from a graph where
        one fits."""
        opts = list(optimizers)
        calls = self._calls(opts) if self.failed is None else None
        key = self._key(calls) if calls else None
        entry = self.graphs.get(key) if key is not None else None
        if entry is None and key is not None and len(self.graphs) < self.MAX_GRAPHS:
            if len(self.sightings) > 64:  # addresses that never repeat: forget them
                self.sightings.clear()
            seen = self.sightings[key] = self.sightings.get(key, 0) + 1
            if seen >= self.CAPTURE_AFTER:
                try:
                    entry = self.graphs[key] = self._capture(calls)
                    self.captures += 1
                except RuntimeError as e:  # nothing captured ran: this step, and the rest, go eagerly
                    self.failed = str(e).splitlines()[0] if str(e) else type(e).__name__
                    print(f"[unic-lift] --optimizer_graph: capturing fused Adam failed ({self.failed}); "
                          "stepping it eagerly", file=sys.stderr, flush=True)
        if entry is None:
            self.eager += 1
            fused_adam_step(opts)
            return
        graph, lrs, fixed, params, grads = entry
        if any(float(group["lr"]) != lr for group, lr in fixed):  # a constant of the graph changed: capture anew
            del self.graphs[key]
            self.eager += 1
            fused_adam_step(opts)
            return
        for group, lr in lrs:
            if float(group["lr"]) != lr[1]:
                lr[0].fill_(float(group["lr"]))
                lr[1] = float(group["lr"])
        _copy_all(grads, [p.grad for p in params])
        graph.replay()
        self.replays += 1
        for p in params:
            p.grad = None

    def _grad_buffer(self, p: Tensor) -> Tensor:
        buf = self.grad_buffers.get(p)
        if buf is None or buf.shape != p.grad.shape or buf.stride() != p.grad.stride() or buf.dtype != p.grad.dtype:
            buf = self.grad_buffers[p] = torch.empty_like(p.grad)
        return buf

    def _capture(self, calls) -> tuple:
        """Captures this step's Adam update (counters, then one fused call per group; a scheduled group's learning
        rate read from a device scalar, the others' constants; the gradients read from buffers of the graph's own,
        which the caller fills before each replay); the caller replays it."""
        device = calls[0][1][0].device
        lrs, fixed, args = [], [], []
        for group, params, opt in calls:
            if group.get("name") in self.scheduled:
                lr = [torch.full((), float(group["lr"]), device=device), float(group["lr"])]
                lrs.append((group, lr))
                value = lr[0]
            else:
                value = float(group["lr"])
                fixed.append((group, value))
            states = [opt.state[p] for p in params]
            args.append((group, params, [self._grad_buffer(p) for p in params], states, value))
        steps = [s["step"] for _, _, _, states, _ in args for s in states]
        # capture_begin / capture_end on a side stream, not ``torch.cuda.graph``: that one empties the allocator's
        # cache first, which would move the next steps' gradients to new blocks and so to a new key every time
        graph, side, here = torch.cuda.CUDAGraph(), torch.cuda.Stream(device), torch.cuda.current_stream(device)
        side.wait_stream(here)
        with torch.cuda.stream(side):
            graph.capture_begin(capture_error_mode="thread_local")  # the graph-rebuild thread may run
            try:
                torch._foreach_add_(steps, 1)
                for group, params, grads, states, lr in args:
                    beta1, beta2 = group["betas"]
                    torch._fused_adam_(
                        params, grads, [s["exp_avg"] for s in states],
                        [s["exp_avg_sq"] for s in states], [], [s["step"] for s in states], amsgrad=False, lr=lr,
                        beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"], eps=group["eps"],
                        maximize=False, grad_scale=None, found_inf=None)
            finally:
                graph.capture_end()
        here.wait_stream(side)
        params = [p for _, ps, _, _, _ in args for p in ps]
        grads = [g for _, _, gs, _, _ in args for g in gs]
        return graph, lrs, fixed, params, grads


def step_all(optimizers, visibility: Optional[Tensor] = None, graph: Optional[AdamGraph] = None) -> None:
    """Steps and clears every optimiser (a dict of them, or an iterable; None entries are skipped);
    SelectiveAdam gets the step's visibility mask; fused Adam goes through ``fused_adam_step``, or through
    ``graph`` (an ``AdamGraph``) where one is given."""
    opts = [o for o in (optimizers.values() if isinstance(optimizers, dict) else optimizers) if o is not None]
    direct = [_direct_fused(o) for o in opts]
    fused = [o for o, d in zip(opts, direct) if d]
    if graph is not None and fused and next(iter(fused[0].param_groups[0]["params"])).is_cuda:
        graph.step(fused)
    else:
        fused_adam_step(fused)
    for opt in (o for o, d in zip(opts, direct) if not d):
        if visibility is not None and type(opt).__name__ == "SelectiveAdam":
            opt.step(visibility)
        else:
            opt.step()
        opt.zero_grad(set_to_none=True)


# ----- the packed feature layout (GaussianModel.pack_features) in checkpoints ------------------
def _columns(value, a: int, b: int):
    """A per-Gaussian moment's columns a..b ([N, W] tensors); anything else (the step counter) as it is."""
    if isinstance(value, Tensor) and value.dim() == 2:
        return value[:, a:b].clone()
    return value.clone() if isinstance(value, Tensor) else value


def optimizer_states(optimizers: Dict[str, torch.optim.Optimizer], packing=None) -> Dict[str, dict]:
    """Each optimiser's ``state_dict()`` by parameter name, the packed parameter's split into one per packed
    feature (its columns of the moments; the slot's are dropped: the render rewrites the slot every step), so a
    checkpoint holds the same names whatever ``--feature_layout`` trained it."""
    out = {}
    for key, opt in optimizers.items():
        state = opt.state_dict()
        if key != PACKED_KEY or packing is None:
            out[key] = state
            continue
        inner = state["state"].get(0)  # one parameter per optimiser
        for name in packing.names:
            a, b = packing.columns(name)
            out[name] = {"state": {} if inner is None else {0: {k: _columns(v, a, b) for k, v in inner.items()}},
                         "param_groups": [dict(g, name=name) for g in state["param_groups"]]}
    return out


def packed_optimizer_state(states: Dict[str, dict], packing) -> dict:
    """The inverse of ``optimizer_states`` for the packed parameter: its state_dict from the features' (the slot's
    moments start at 0). Exact for the features' columns when their step counters agree (the step counter is the
    first feature's; the features of one step are all trained, so they do)."""
    missing = [n for n in packing.names if n not in states]
    if missing:
        raise KeyError(f"the checkpoint has no optimiser state for {', '.join(missing)}")
    inners = [states[n]["state"].get(0) for n in packing.names]
    template = next((s for s in inners if s is not None), None)
    merged = {}
    if template is not None:
        for k, v in template.items():
            if isinstance(v, Tensor) and v.dim() == 2:
                blocks = [v.new_zeros(v.shape[0], packing.slot)]
                for s, width in zip(inners, packing.widths):
                    blocks.append(s[k] if s is not None else v.new_zeros(v.shape[0], width))
                merged[k] = torch.cat(blocks, dim=1)
            else:
                merged[k] = v
    groups = [dict(g, name=PACKED_KEY) for g in states[packing.names[0]]["param_groups"]]
    return {"state": {0: merged} if merged else {}, "param_groups": groups}
