#!/usr/bin/env bash
# Device round 1 (one H100 command, < 10 min): build gsplat, GPU parity tests, rasterizer
# benchmark, generate the 640x480 benchmark scene, then start the full 30k-iteration runs in the
# background (setsid) so that the next device call can collect them:
#   rgb  : plain 3DGS (--seg_dir none), the issue-2 benchmark
#   unic : UniC-Lift, full schedule, default flags
# Usage (device tool): bash benchmarks/device_round1.sh
set -o pipefail
source benchmarks/device_env.sh || exit 1
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/device.txt"
git log -1 --format=%H 2>/dev/null | tee -a "$OUT/device.txt"
python3 -m pytest -q -s tests/test_gpu_parity.py 2>&1 | tee "$OUT/gpu_tests.log"
python3 benchmarks/bench_rasterizer.py --device cuda --backends gsplat torch --n 20000 200000 \
    --res 640x480 --channels 3 16 2>&1 | tee "$OUT/bench_rasterizer.md"
SCENE=/tmp/data/bench_room25
python3 tools/make_scene.py --out $SCENE --objects 25 --views 200 --size 640x480 --noise realistic \
    --seed 0 --workers 16 > "$OUT/make_scene.log" 2>&1
echo "scene: $(du -sh $SCENE)"
mkdir -p /tmp/runs
setsid bash -c "
  python3 train.py -s $SCENE -m /tmp/runs/rgb --seg_dir none > /tmp/runs/rgb.log 2>&1;
  python3 render.py -m /tmp/runs/rgb --skip_train --quiet >> /tmp/runs/rgb.log 2>&1;
  python3 metrics.py -m /tmp/runs/rgb >> /tmp/runs/rgb.log 2>&1;
  python3 train.py -s $SCENE -m /tmp/runs/unic > /tmp/runs/unic.log 2>&1;
  python3 render.py -m /tmp/runs/unic --skip_train --labels --quiet >> /tmp/runs/unic.log 2>&1;
  python3 metrics.py -m /tmp/runs/unic >> /tmp/runs/unic.log 2>&1; touch /tmp/runs/DONE
" < /dev/null > /dev/null 2>&1 &
sleep 20; cat /tmp/runs/rgb.log
