# Source on the GPU machine (the `device` tool) from the repo root:
#   source benchmarks/device_env.sh
# Installs the carried wheels (.whl/: gsplat 1.5.3, embreex, trimesh) into /tmp/site and builds
# gsplat's CUDA extension once (about 80 s on an H100), so later steps start warm.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || return 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 MAX_JOBS=16 TORCH_CUDA_ARCH_LIST=9.0
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
python3 - <<'PY'
import time, torch, gsplat
t = time.time()
from gaussian_renderer.rasterizer import rasterize
n = 16
means = torch.randn(n, 3, device="cuda") * 0.1; means[:, 2] += 2
q = torch.zeros(n, 4, device="cuda"); q[:, 0] = 1
K = torch.tensor([[50., 0, 32], [0, 50., 24], [0, 0, 1]], device="cuda")
rasterize(means, q, torch.full((n, 3), 0.05, device="cuda"), torch.full((n,), 0.5, device="cuda"),
          torch.rand(n, 3, device="cuda"), torch.eye(4, device="cuda"), K, 64, 48, backend="gsplat")
torch.cuda.synchronize()
print(f"gsplat {gsplat.__version__} ready on {torch.cuda.get_device_name()} (torch {torch.__version__}) in {time.time()-t:.0f} s")
PY
