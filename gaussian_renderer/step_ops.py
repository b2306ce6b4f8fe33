"""Small CUDA kernels of the training step (``csrc/step_ops.cu``), each in place of a chain of PyTorch operators:

* ``neighbor_loss_cuda(v, idx, sigmoid)``: L_3D, mean over pairs of ||f(v_i) - f(v_j)||^2, as one kernel that
  also adds the gradient into a buffer; the backward multiplies it by the incoming gradient.
  ``neighbor_loss_into_grad(v, idx, sigmoid, scale)``: the same kernel after the step's backward, adding ``scale``
  times the gradient straight into the parameter's ``.grad`` (the training step's path on CUDA).
* ``cluster_term_cuda(e, labels, counts, k, num_kept, push, push_scale)``: the loss stage's cluster term (segment
  means, pull and push) in four kernels forward and two backward.
* ``triplet_term_cuda(e, W, table, boundary, scalars, rand, margin)``: the loss stage's triplet term (drawing the
  triplets, the layer W and the mean hinge) as one kernel forward, one kernel and one matrix product backward.

They are used on CUDA where the kernels build (nvcc, as for the tile kernel: ``feature_backward.build_library``);
``UNIC_LIFT_STEP_OPS=0`` keeps PyTorch's operators, which tests/test_step_ops.py compares them with, as does
every other device. A packing kernel for the render's channels was dropped: slower than ``torch.cat``
(RESULTS.md 23a).
``step_ops_status()`` says which is used and why.
"""
from __future__ import annotations

import ctypes
import os
import sys
import threading
from typing import Optional

import torch
from torch import Tensor

from gaussian_renderer.rasterizer import column_block

__all__ = ["cluster_term_cuda", "neighbor_grad_applies", "neighbor_loss_cuda", "neighbor_loss_into_grad",
           "step_ops_available", "step_ops_status", "triplet_term_cuda"]

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc", "step_ops.cu")
MAX_DIM = 16  # csrc/step_ops.cu
# UNIC_LIFT_STEP_OPS when unset: on (tests/test_step_ops.py passed on an H200, RESULTS.md 23a).
STEP_OPS_DEFAULT = "1"


def _wanted() -> bool:
    return os.environ.get("UNIC_LIFT_STEP_OPS", STEP_OPS_DEFAULT) != "0"
_lock = threading.Lock()
_libs: dict = {}
_status: dict = {}  # arch -> None (ready) or the one-line reason it is not


_archs: dict = {}  # device index -> "90" etc. (asked once: every call of the step's kernels looks it up)


def _arch(device: torch.device) -> str:
    index = device.index if device.index is not None else torch.cuda.current_device()
    arch = _archs.get(index)
    if arch is None:
        major, minor = torch.cuda.get_device_capability(index)
        arch = _archs[index] = f"{major}{minor}"
    return arch


def _load(device: torch.device) -> Optional[ctypes.CDLL]:
    """The kernels for ``device``'s architecture, or None (the reason is in ``step_ops_status``)."""
    arch = _arch(device)
    if arch in _libs or arch in _status:
        return _libs.get(arch)
    with _lock:
        if arch in _libs or arch in _status:
            return _libs.get(arch)
        from gaussian_renderer.feature_backward import FeatureBackwardError, build_library

        try:
            so = build_library(SOURCE, arch, "the step kernels", "step kernels", "UNIC_LIFT_STEP_OPS=0")
        except FeatureBackwardError as e:
            _status[arch] = f"{e}; PyTorch's operators are used instead"
            print(f"[unic-lift] {_status[arch]}", file=sys.stderr)
            return None
        lib = ctypes.CDLL(so)
        p, i, i64 = ctypes.c_void_p, ctypes.c_int, ctypes.c_int64
        lib.unic_neighbor_loss.restype = i
        lib.unic_neighbor_loss.argtypes = [p, i, i, p, i64, i, ctypes.c_float, p, p, p]
        lib.unic_triplet_fwd.restype = lib.unic_triplet_bwd.restype = i
        lib.unic_triplet_fwd.argtypes = [p, i, p, i, i, p, i, p, p, i, i, p, ctypes.c_float, p, p, p]
        lib.unic_triplet_bwd.argtypes = [p, i, p, i, p, p, p, p, p, p]
        f32 = ctypes.c_float
        lib.unic_cluster_fwd.restype = lib.unic_cluster_bwd.restype = i
        lib.unic_cluster_fwd.argtypes = [p, i, p, i64, i, p, p, p, i, f32, p, p, p, p]
        lib.unic_cluster_bwd.argtypes = [p, i, p, i64, i, p, p, p, i, f32, p, p, p, p, p]
        lib.unic_step_ops_error.restype = ctypes.c_char_p
        lib.unic_step_ops_error.argtypes = [i]
        _libs[arch], _status[arch] = lib, None
        return lib


def step_ops_available(device: torch.device) -> bool:
    """Whether the kernels run on ``device`` (CUDA, not turned off with ``UNIC_LIFT_STEP_OPS=0``, and built)."""
    device = torch.device(device)
    if device.type != "cuda" or not _wanted():
        return False
    return _load(device) is not None


def step_ops_status(device: torch.device) -> str:
    """One line: whether the step kernels are used on ``device``, and if not, why."""
    device = torch.device(device)
    if device.type != "cuda":
        return "step kernels: CUDA only; PyTorch's operators on this device"
    if not _wanted():
        return "step kernels: off (UNIC_LIFT_STEP_OPS=0); PyTorch's operators are used"
    if _load(device) is not None:
        return "step kernels: on"
    return "step kernels: " + _status[_arch(device)]


def _check(code: int, lib: ctypes.CDLL, what: str) -> None:
    if code != 0:
        raise RuntimeError(f"{what}: {lib.unic_step_ops_error(code).decode()}")


def _stream(device: torch.device) -> int:
    return torch.cuda.current_stream(device).cuda_stream


class _NeighborLossCUDA(torch.autograd.Function):
    """L_3D on columns ``column .. column + width`` of ``table`` [N, W] (contiguous): the whole table is the
    input, so a packed feature parameter gets its gradient in its own layout (no [N, width] copy either way)."""

    @staticmethod
    def forward(ctx, table, idx, sigmoid, column, width):
        lib = _load(table.device)
        E = idx.shape[0] // 2
        loss = table.new_zeros(())
        grad = table.new_zeros(table.shape) if ctx.needs_input_grad[0] else None
        offset = column * table.element_size()
        with torch.cuda.device(table.device):
            _check(lib.unic_neighbor_loss(table.data_ptr() + offset, width, table.shape[1], idx.data_ptr(), E,
                                          int(bool(sigmoid)), 1.0, loss.data_ptr(),
                                          None if grad is None else grad.data_ptr() + offset,
                                          _stream(table.device)), lib, "neighbor_loss")
        ctx.save_for_backward(grad)
        return loss

    @staticmethod
    def backward(ctx, g):
        (grad,) = ctx.saved_tensors
        # in place: the buffer is this node's own, and a second backward through it fails the saved-tensor
        # version check instead of reading a scaled buffer (a packed table's gradient is [N, W], not [N, width])
        return grad.mul_(g), None, None, None, None


def _neighbor_block(v: Tensor, idx: Tensor) -> Optional[tuple]:
    """``(table, column)`` behind ``v`` where L_3D's kernel takes ``v`` and the pairs ``idx``, else None."""
    block = column_block(v)
    if not (block is not None and v.is_cuda and v.dtype == torch.float32 and idx.dtype == torch.int32
            and idx.is_contiguous() and idx.device == v.device and idx.numel() >= 2 and idx.numel() % 2 == 0
            and step_ops_available(v.device)):
        return None
    return block


def neighbor_loss_cuda(v: Tensor, idx: Tensor, sigmoid: bool) -> Optional[Tensor]:
    """L_3D on the pairs ``idx`` [2E] (i0, j0, i1, j1, ...) as one kernel: mean over pairs of
    ||f(v_i) - f(v_j)||^2, f = sigmoid or the identity; the gradient is computed in the same pass. None where the
    kernel does not apply (not CUDA float32, int32 pairs, or not built): the caller then uses PyTorch's operators."""
    block = _neighbor_block(v, idx)
    if block is None:
        return None
    table, column = block
    return _NeighborLossCUDA.apply(table, idx, bool(sigmoid), column, v.shape[1])


def neighbor_grad_applies(v: Tensor, idx: Optional[Tensor] = None) -> bool:
    """Whether ``neighbor_loss_into_grad`` takes the feature ``v`` (a trained parameter or its column view) and, if
    given, the pairs ``idx``: decided before the backward, after which nothing else can apply L_3D's gradient."""
    block = column_block(v)
    if block is None or not (v.is_cuda and v.dtype == torch.float32 and step_ops_available(v.device)):
        return False
    table = block[0]
    if not (table.is_leaf and table.requires_grad):
        return False
    return idx is None or _neighbor_block(v, idx) is not None


@torch.no_grad()
def neighbor_loss_into_grad(v: Tensor, idx: Tensor, sigmoid: bool, scale: float) -> Tensor:
    """L_3D on the pairs ``idx`` as ``neighbor_loss_cuda`` computes it, with ``scale`` times its gradient added
    straight into the ``.grad`` of the parameter behind ``v`` (one kernel, atomics on the pairs' rows only; a
    zeroed ``.grad`` is made if it has none), outside autograd: called after the step's backward, it spares the
    autograd node, a zeroed [N, W] buffer, its scaling and its accumulation into ``.grad``. Returns the loss,
    detached. ``neighbor_grad_applies(v, idx)`` must hold."""
    table, column = _neighbor_block(v, idx)
    if table.grad is None:
        table.grad = torch.zeros_like(table)
    grad = table.grad
    if grad.shape != table.shape or not grad.is_contiguous():
        raise ValueError(f"neighbor_loss_into_grad: the parameter's .grad {tuple(grad.shape)} is not a contiguous "
                         f"{tuple(table.shape)}")
    lib = _load(table.device)
    loss = table.new_zeros(())
    offset = column * table.element_size()
    with torch.cuda.device(table.device):
        _check(lib.unic_neighbor_loss(table.data_ptr() + offset, v.shape[1], table.shape[1], idx.data_ptr(),
                                      idx.shape[0] // 2, int(bool(sigmoid)), float(scale), loss.data_ptr(),
                                      grad.data_ptr() + offset, _stream(table.device)), lib, "neighbor_loss")
    return loss


class _TripletTermCUDA(torch.autograd.Function):
    @staticmethod
    def forward(ctx, e, W, table, boundary, scalars, rand, margin):
        lib = _load(e.device)
        T, D = rand.shape[0], e.shape[1]
        loss = e.new_zeros(())
        trip = torch.empty(T, 4, dtype=torch.int32, device=e.device)
        with torch.cuda.device(e.device):
            _check(lib.unic_triplet_fwd(e.data_ptr(), D, table.data_ptr(), table.shape[1], table.shape[0],
                                        boundary.data_ptr(), boundary.shape[0], scalars.data_ptr(), rand.data_ptr(),
                                        rand.shape[1], T, None if W is None else W.data_ptr(), float(margin),
                                        loss.data_ptr(), trip.data_ptr(), _stream(e.device)), lib, "triplet term")
        ctx.save_for_backward(e, W, trip)
        return loss

    @staticmethod
    def backward(ctx, g):
        e, W, trip = ctx.saved_tensors
        lib = _load(e.device)
        T, D = trip.shape[0], e.shape[1]
        grad_e = torch.zeros_like(e)
        G = e.new_empty(2 * T, D)
        X = e.new_empty(2 * T, D)
        g = g.contiguous()
        with torch.cuda.device(e.device):
            _check(lib.unic_triplet_bwd(e.data_ptr(), D, trip.data_ptr(), T, None if W is None else W.data_ptr(),
                                        g.data_ptr(), grad_e.data_ptr(), G.data_ptr(), X.data_ptr(),
                                        _stream(e.device)), lib, "triplet term backward")
        grad_w = G.t() @ X if W is not None and ctx.needs_input_grad[1] else None
        return grad_e, grad_w, None, None, None, None, None


def triplet_term_cuda(e: Tensor, W: Optional[Tensor], table: Tensor, boundary: Tensor, scalars: Tensor, rand: Tensor,
                      margin: float) -> Optional[Tensor]:
    """The loss stage's triplet term in one kernel: T = rand.shape[0] triplets drawn as
    ``targets.static_sample_triplets`` draws them (table [M_max, 4 + Q] int32, boundary [B_max] int64, the view's
    anchor count at scalars[2], rand [T, 2 + Q]), z = W x on the code rows e [P, D] (W [D, D], or None: no layer),
    and the mean hinge ``max(0, |z_a - z_p|^2 - |z_a - z_n|^2 + margin)``; 0 when the view has no anchor. Gradients
    reach e and W. None where the kernel does not apply (not CUDA float32, D > 16, other dtypes, or not built):
    the caller then uses PyTorch's operators."""
    if not (e.is_cuda and e.dtype == torch.float32 and e.dim() == 2 and 1 <= e.shape[1] <= MAX_DIM
            and table.dtype == torch.int32 and table.dim() == 2 and table.shape[1] >= 4 and table.shape[0] >= 1
            and boundary.dtype == torch.int64 and boundary.numel() >= 1 and scalars.dtype == torch.float32
            and scalars.numel() >= 3 and rand.dtype == torch.float32 and rand.dim() == 2 and rand.shape[0] >= 1
            and rand.shape[1] == table.shape[1] - 2 and e.numel() < 2 ** 31
            and (W is None or (W.dtype == torch.float32 and W.shape == (e.shape[1], e.shape[1])))
            and step_ops_available(e.device)):
        return None
    e = e.contiguous()
    W = None if W is None else W.contiguous()
    return _TripletTermCUDA.apply(e, W, table.contiguous(), boundary.contiguous(), scalars.contiguous(),
                                  rand.contiguous(), float(margin))


SUM_CHUNK = 2048  # csrc/step_ops.cu, as segmentation.targets.SUM_CHUNK


class _ClusterTermCUDA(torch.autograd.Function):
    @staticmethod
    def forward(ctx, e, labels, counts, k, num_kept, gauss, scale):
        lib = _load(e.device)
        (P, D), K1 = e.shape, counts.shape[0]
        sums = e.new_zeros(-(-P // SUM_CHUNK) * K1, D)
        means = e.new_empty(K1, D)
        loss = e.new_zeros(())
        with torch.cuda.device(e.device):
            _check(lib.unic_cluster_fwd(e.data_ptr(), D, labels.data_ptr(), P, K1, counts.data_ptr(), k.data_ptr(),
                                        num_kept.data_ptr(), int(gauss), float(scale), sums.data_ptr(),
                                        means.data_ptr(), loss.data_ptr(), _stream(e.device)), lib, "cluster term")
        ctx.save_for_backward(e, labels, counts, k, num_kept, means)
        ctx.gauss, ctx.scale = gauss, scale
        return loss

    @staticmethod
    def backward(ctx, g):
        e, labels, counts, k, num_kept, means = ctx.saved_tensors
        lib = _load(e.device)
        (P, D), K1 = e.shape, counts.shape[0]
        g_m = e.new_empty(K1, D)
        grad_e = torch.empty_like(e)
        g = g.contiguous()
        with torch.cuda.device(e.device):
            _check(lib.unic_cluster_bwd(e.data_ptr(), D, labels.data_ptr(), P, K1, counts.data_ptr(), k.data_ptr(),
                                        num_kept.data_ptr(), int(ctx.gauss), float(ctx.scale), means.data_ptr(),
                                        g.data_ptr(), g_m.data_ptr(), grad_e.data_ptr(), _stream(e.device)),
                   lib, "cluster term backward")
        return grad_e, None, None, None, None, None, None


def cluster_term_cuda(e: Tensor, labels: Tensor, counts: Tensor, k: Tensor, num_kept: Tensor, push: str,
                      push_scale: float) -> Optional[Tensor]:
    """``segmentation.targets.static_cluster_total`` in a few kernels: e [P, D] codes, labels [P] int32 in
    [0, K_max] (K_max = ignored), counts [K_max + 1] float >= 1, k and num_kept 0-d float32 on the device (the
    view's segments and kept pixels); push "gauss" (with ``push_scale``) or "sqdist". The gradient reaches e. None
    where the kernel does not apply (not CUDA float32, D > 16, other dtypes, or not built)."""
    if not (e.is_cuda and e.dtype == torch.float32 and e.dim() == 2 and 1 <= e.shape[1] <= MAX_DIM
            and 0 < e.numel() < 2 ** 31 and labels.dtype == torch.int32 and labels.shape == e.shape[:1]
            and counts.dtype == torch.float32 and counts.dim() == 1 and counts.shape[0] >= 1
            and all(t.dtype == torch.float32 and t.numel() == 1 for t in (k, num_kept))
            and push in ("gauss", "sqdist") and step_ops_available(e.device)):
        return None
    return _ClusterTermCUDA.apply(e.contiguous(), labels.contiguous(), counts.contiguous(), k, num_kept,
                                  push == "gauss", float(push_scale))
