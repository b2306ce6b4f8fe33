"""Times rasterize() forward and forward+backward for each backend; prints a Markdown table.

    python benchmarks/bench_rasterizer.py --n 20000 200000 --res 640x480 --channels 3 16
    python benchmarks/bench_rasterizer.py --device cpu --backends torch --n 20000 --res 128x96

Random Gaussians fill the view frustum (``gaussian_renderer.testing.random_scene``). Times are
medians over ``--repeats`` runs after ``--warmup`` runs, with ``torch.cuda.synchronize()`` around
each timed region on CUDA. The gsplat backend needs CUDA (its first call compiles kernels,
which the warm-up absorbs).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gaussian_renderer import rasterize  # noqa: E402
from gaussian_renderer.testing import random_scene  # noqa: E402

PARAMS = ("means", "quats", "scales", "opacities", "colors")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_backend(scene: dict, backend: str, repeats: int, warmup: int) -> tuple[float, float, int]:
    """Median seconds of (forward, forward+backward) and the number of visible Gaussians."""
    device = scene["means"].device
    leaves = {k: scene[k].clone().requires_grad_(True) for k in PARAMS}
    args = {**scene, **leaves}

    def forward():
        with torch.no_grad():
            return rasterize(**args, backend=backend)

    def forward_backward():
        img, alpha, info = rasterize(**args, backend=backend)
        info["means2d"].retain_grad()  # as densification does
        (img.sum() + alpha.sum()).backward()
        for t in leaves.values():
            t.grad = None
        return info

    fwd, fwd_bwd = [], []
    for i in range(warmup + repeats):
        _sync(device)
        t0 = time.perf_counter()
        forward()
        _sync(device)
        t1 = time.perf_counter()
        info = forward_backward()
        _sync(device)
        t2 = time.perf_counter()
        if i >= warmup:
            fwd.append(t1 - t0)
            fwd_bwd.append(t2 - t1)
    visible = int((info["radii"] > 0).all(-1).sum())
    return statistics.median(fwd), statistics.median(fwd_bwd), visible


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, nargs="+", default=[20_000, 200_000], help="Gaussian counts")
    p.add_argument("--res", nargs="+", default=["640x480"], help="resolutions WxH")
    p.add_argument("--channels", type=int, nargs="+", default=[3, 16], help="blended channels D")
    p.add_argument("--backends", nargs="+", default=["gsplat", "torch"], choices=["gsplat", "torch"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    backends = [b for b in args.backends if b == "torch" or device.type == "cuda"]
    if len(backends) < len(args.backends):
        print(f"skipping gsplat: it needs CUDA (device is {device})", file=sys.stderr)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU x{torch.get_num_threads()} threads"

    print(f"device: {name}; torch {torch.__version__}; median of {args.repeats} after {args.warmup} warm-up\n")
    print("| backend | N | visible | resolution | D | forward ms | fwd+bwd ms |")
    print("|---|---:|---:|---|---:|---:|---:|")
    for res in args.res:
        width, height = (int(v) for v in res.lower().split("x"))
        for n in args.n:
            for d in args.channels:
                scene = random_scene(n, width, height, channels=d, seed=args.seed, device=device)
                for backend in backends:
                    f, fb, vis = time_backend(scene, backend, args.repeats, args.warmup)
                    print(f"| {backend} | {n} | {vis} | {width}x{height} | {d} | {1e3 * f:.2f} | {1e3 * fb:.2f} |",
                          flush=True)


if __name__ == "__main__":
    main()
