"""Random Gaussian scenes in front of a camera, for tests, parity checks and benchmarks."""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor


def look_at_intrinsics(width: int, height: int, fov_x_deg: float = 60.0, dtype=torch.float32) -> Tensor:
    """Pinhole K [3, 3] with the principal point at the image centre.

    Convention: pixel centres at (u + 0.5, v + 0.5), so the centre is (W / 2, H / 2).
    """
    f = 0.5 * width / math.tan(math.radians(fov_x_deg) / 2)
    return torch.tensor([[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]], dtype=dtype)


def random_viewmat(generator: torch.Generator, dtype=torch.float32) -> Tensor:
    """A world-to-camera [4, 4] with a small random rotation and offset (OpenCV axes)."""
    axis_angle = 0.2 * torch.randn(3, generator=generator, dtype=torch.float64)
    angle = axis_angle.norm()
    k = axis_angle / angle
    kx = torch.tensor([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]], dtype=torch.float64)
    rot = torch.eye(3, dtype=torch.float64) + angle.sin() * kx + (1 - angle.cos()) * kx @ kx
    viewmat = torch.eye(4, dtype=torch.float64)
    viewmat[:3, :3] = rot
    viewmat[:3, 3] = 0.3 * torch.randn(3, generator=generator, dtype=torch.float64)
    return viewmat.to(dtype)


def random_scene(
    n: int,
    width: int,
    height: int,
    *,
    channels: int = 3,
    seed: int = 0,
    depth_range: tuple = (2.0, 6.0),
    scale_range: tuple = (0.02, 0.15),
    opacity_range: tuple = (0.05, 0.95),
    spread: float = 1.0,
    device: Optional[torch.device | str] = None,
    dtype: torch.dtype = torch.float32,
) -> dict:
    """N random Gaussians filling the view frustum (``spread`` > 1 reaches past its edges).

    Returns a dict of the ``rasterize()`` arguments: means [N, 3] (world), quats [N, 4]
    (unnormalised wxyz), scales [N, 3], opacities [N], colors [N, D], viewmat [4, 4], K [3, 3],
    width, height.
    """
    g = torch.Generator().manual_seed(seed)
    K = look_at_intrinsics(width, height, dtype=torch.float64)
    viewmat = random_viewmat(g, dtype=torch.float64)
    z = torch.empty(n, dtype=torch.float64).uniform_(*depth_range, generator=g)
    u = (torch.rand(n, generator=g, dtype=torch.float64) - 0.5) * spread * width + width / 2
    v = (torch.rand(n, generator=g, dtype=torch.float64) - 0.5) * spread * height + height / 2
    cam = torch.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z], -1)  # [N, 3]
    rot, trans = viewmat[:3, :3], viewmat[:3, 3]
    means = (cam - trans) @ rot  # camera -> world: R^T (x - t)
    log_lo, log_hi = math.log(scale_range[0]), math.log(scale_range[1])
    scales = torch.exp(torch.empty(n, 3, dtype=torch.float64).uniform_(log_lo, log_hi, generator=g))
    quats = torch.randn(n, 4, generator=g, dtype=torch.float64)
    opacities = torch.empty(n, dtype=torch.float64).uniform_(*opacity_range, generator=g)
    colors = torch.rand(n, channels, generator=g, dtype=torch.float64)
    out = dict(means=means, quats=quats, scales=scales, opacities=opacities, colors=colors,
               viewmat=viewmat, K=K)
    out = {k: t.to(device=device, dtype=dtype) for k, t in out.items()}
    out.update(width=width, height=height)
    return out


def room_scene(
    n: int = 30_000,
    width: int = 128,
    height: int = 96,
    *,
    channels: int = 3,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> dict:
    """N Gaussians in a 6 x 3 x 6 box room seen from a camera near its centre (the CPU timing
    case of issue 10): 90 % lie on the six walls, 10 % float inside; most are behind the camera.

    Same dict as ``random_scene``. Convention: world-to-camera is a pure translation, OpenCV
    axes (the camera looks down +z), 70 degrees horizontal field of view.
    """
    g = torch.Generator().manual_seed(seed)
    half = torch.tensor([3.0, 1.5, 3.0], dtype=torch.float64)
    n_wall = int(0.9 * n)
    wall = (torch.rand(n_wall, 3, generator=g, dtype=torch.float64) * 2 - 1) * half  # [n_wall, 3]
    face = torch.randint(0, 6, (n_wall,), generator=g)
    axis, sign = face // 2, (face % 2) * 2 - 1
    wall[torch.arange(n_wall), axis] = sign.double() * half[axis]  # onto the face
    inside = (torch.rand(n - n_wall, 3, generator=g, dtype=torch.float64) * 2 - 1) * half * 0.8
    scales = torch.exp(torch.empty(n, 3, dtype=torch.float64).uniform_(math.log(0.02), math.log(0.12), generator=g))
    viewmat = torch.eye(4, dtype=torch.float64)
    viewmat[:3, 3] = torch.tensor([0.1, 0.2, 0.5], dtype=torch.float64)
    out = dict(means=torch.cat([wall, inside]), quats=torch.randn(n, 4, generator=g, dtype=torch.float64),
               scales=scales, opacities=torch.empty(n, dtype=torch.float64).uniform_(0.1, 0.99, generator=g),
               colors=torch.rand(n, channels, generator=g, dtype=torch.float64), viewmat=viewmat,
               K=look_at_intrinsics(width, height, 70.0, dtype=torch.float64))
    out = {k: t.to(dtype) for k, t in out.items()}
    out.update(width=width, height=height)
    return out
