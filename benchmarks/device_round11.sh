# Session 7 lease (`device` tool), from the repository root, carrying .whl/: the issue's own timing (the
# full 30k schedule, plain then UniC-Lift, alone on the GPU; issue 10), then full-schedule label runs at
# 100 and 500 objects side by side on unseen scenes (issue 9). Stages, one `run` call each:
#   bash benchmarks/device_round11.sh A      build, scenes, GPU tests; starts the background chain
#   bash benchmarks/device_round11.sh poll   wait (<= WAIT s) for the chain, pack results into $OUT
set -u
W=/tmp/w; R=/tmp/r11; D=/tmp/data
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
ITERS=${ITERS:-30000}
LABEL_SCENES=${LABEL_SCENES:-"messy100 messy500"}
stage=${1:-A}
source benchmarks/device_jobs.sh  # acc_job, fresh_tree, bench_scene, label_jobs, pack_results, poll_labels

chain() {
  cd $W; export PYTHONPATH=/tmp/site:$W PYTHONUNBUFFERED=1
  # 1. the measurement: 30k iterations, every default, one run at a time
  python3 benchmarks/bench_train.py --scene $D/bench --out $R/full --iterations $ITERS --variants plain unic \
    --seeds 0 > $R/full.log 2>&1
  touch $R/full.DONE
  # 2. labels at the full schedule, side by side (not timed)
  label_jobs
}

if [ "$stage" = A ]; then
  fresh_tree || exit 1
  bench_scene 5 &
  python3 tools/make_scene.py --out $D/messy100 --objects 100 --views 186 --size 480x360 --noise realistic \
    --layout large_corridor --seed 52 --format messy --workers 5 --quiet > $R/make100.log 2>&1 &
  python3 tools/make_scene.py --out $D/messy500 --objects 500 --views 186 --size 480x360 --noise realistic \
    --layout old_room --seed 53 --format messy --workers 5 --quiet > $R/make500.log 2>&1 &
  python3 -m pytest -m gpu -q -p no:cacheprovider > $R/gpu_tests.log 2>&1; tail -2 $R/gpu_tests.log
  wait; echo "scenes ready at ${SECONDS}s"; tail -2 $R/make*.log
  setsid bash -c "$(declare -f chain acc_job label_jobs); R=$R W=$W D=$D ITERS=$ITERS LABEL_SCENES='$LABEL_SCENES'; chain" \
    < /dev/null > $R/chain.log 2>&1 &
  sleep 5; pack_results full r11
fi

if [ "$stage" = poll ]; then
  poll_labels full r11
fi
