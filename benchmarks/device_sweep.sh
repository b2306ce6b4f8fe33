#!/usr/bin/env bash
# One device call: build gsplat, GPU tests, the benchmark scene, then the open-choice sweep in the
# background from a snapshot of the repo (later calls re-sync the working tree; the snapshot keeps
# the sweep's code fixed). Poll with `bash benchmarks/device_poll.sh`.
#   SWEEP_RUNS="default push_sqdist ..." SWEEP_PARALLEL=4 bash benchmarks/device_sweep.sh
set -o pipefail
source benchmarks/device_env.sh || exit 1
mkdir -p "$OUT"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; git log -1 --format=%H 2>/dev/null;
  python3 -c "import torch; print('torch', torch.__version__)"; } | tee "$OUT/device.txt"
# SWEEP_OBJECTS / SWEEP_FORMAT pick the scene: PanopLi with 25 objects (default), or e.g. Messy-Rooms with 50.
OBJ=${SWEEP_OBJECTS:-25}; FMT=${SWEEP_FORMAT:-panopli}
S=/tmp/data/bench_${FMT}${OBJ}
[ -d $S ] || python3 tools/make_scene.py --out $S --objects $OBJ --views 200 --size 640x480 --noise realistic \
    --seed 0 --format $FMT --workers 16 > /tmp/make_scene.log 2>&1
rm -rf /tmp/snap && mkdir -p /tmp/snap && cp -r arguments scene gaussian_renderer segmentation utils tools benchmarks \
    train.py render.py metrics.py /tmp/snap/
(cd /tmp/snap && setsid bash benchmarks/sweep_open_choices.sh $S /tmp/sweep > /tmp/sweep.log 2>&1 < /dev/null &)
if [ -z "$SKIP_GPU_TESTS" ]; then
  python3 -m pytest -q -s tests/test_gpu_parity.py 2>&1 | tee "$OUT/gpu_tests.log"
fi
sleep 5; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv
