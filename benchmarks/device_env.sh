# Source on the GPU machine (the `device` tool) from the repo root:
#   source benchmarks/device_env.sh
# Installs the carried wheels (.whl/: gsplat 1.5.3, embreex, trimesh) into /tmp/site and makes gsplat's CUDA
# extension and the project's nvcc libraries ready, so later steps start warm: from .prebuilt/prebuilt.tar.xz
# (carried beside .whl) when its stamp (torch, CUDA, gsplat, GPU architecture) matches this machine, else built
# here (about 70 s on an H200). After a build here the archive is written to $OUT/prebuilt.tar.xz: copy it to
# .prebuilt/ on the session's machine (ignored) and name .prebuilt in `carry` for the next lease.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || return 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 MAX_JOBS=16 TORCH_CUDA_ARCH_LIST=9.0
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
python3 benchmarks/device_prebuilt.py use .prebuilt/prebuilt.tar.xz /tmp/site/gsplat
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
from gsplat.cuda._backend import _C
from gaussian_renderer.feature_backward import load_library
from gaussian_renderer.step_ops import step_ops_status
try:  # the tile kernel and the step kernels: built now (nvcc), or from the cache; a failure is the run's to report
    load_library(torch.device("cuda"))
except Exception as e:
    print(f"tile kernel: {e}")
print(step_ops_status(torch.device("cuda")))
print(f"gsplat {gsplat.__version__} ready on {torch.cuda.get_device_name()} (torch {torch.__version__}) in "
      f"{time.time()-t:.0f} s ({'prebuilt' if _C.__name__ == 'gsplat.csrc' else 'built here'})")
PY
_unic_ready=$?
# xz takes a few tens of seconds on one core: in the background, beside the stage's untimed start (GPU tests,
# scenes); a caller's `wait` includes it
python3 benchmarks/device_prebuilt.py save "$OUT/prebuilt.tar.xz" /tmp/site/gsplat &
[ "$_unic_ready" = 0 ]  # the status of sourcing this file: whether gsplat and the libraries are ready
