# Next lease (`device` tool, carry .whl/), from the repository root. Stages, one `run` call each:
#   bash benchmarks/device_round13.sh A      build, scenes, GPU tests; starts the background chain
#   WAIT=540 bash benchmarks/device_round13.sh poll   wait for the chain, pack results into $OUT
# The chain: 1. speed (issue 10), alone on the GPU: bench_train, 4000 iterations, plain and UniC-Lift
# as is, with the tile kernel for the features' gradient (--feature_backward tile), with --seg_interval 2,
# and both; 2. labels at the full schedule side by side (issue 9): unseen Messy-Rooms
# scenes at 100 and 500 objects (decode sweep, extraction with the thing vote, things_ab.py).
# Never `pkill -f` a pattern that appears in the run's own command line (it kills the run).
set -u
W=/tmp/w; R=/tmp/r13; D=/tmp/data
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
ITERS=${ITERS:-30000}
LABEL_SCENES=${LABEL_SCENES:-"messy100 messy500"}
stage=${1:-A}
source benchmarks/device_jobs.sh  # acc_job, fresh_tree, bench_scene, label_jobs, pack_results, poll_labels

chain() {
  cd $W; export PYTHONPATH=/tmp/site:$W PYTHONUNBUFFERED=1
  python3 benchmarks/bench_train.py --scene $D/bench --out $R/speed --iterations 4000 --seeds 0 \
    --variants plain unic "unic:--feature_backward tile" "unic:--seg_interval 2" \
    "unic:--feature_backward tile --seg_interval 2" > $R/speed.log 2>&1
  touch $R/speed.DONE
  label_jobs
}

if [ "$stage" = A ]; then
  fresh_tree || exit 1
  bench_scene 5 &
  python3 tools/make_scene.py --out $D/messy100 --objects 100 --views 186 --size 480x360 --noise realistic \
    --layout large_corridor --seed 72 --format messy --workers 5 --quiet > $R/make100.log 2>&1 &
  python3 tools/make_scene.py --out $D/messy500 --objects 500 --views 186 --size 480x360 --noise realistic \
    --layout old_room --seed 73 --format messy --workers 5 --quiet > $R/make500.log 2>&1 &
  python3 -m pytest -m gpu -q -p no:cacheprovider > $R/gpu_tests.log 2>&1; tail -n 2 $R/gpu_tests.log
  wait; echo "scenes ready at ${SECONDS}s"
  setsid bash -c "$(declare -f chain acc_job label_jobs); R=$R W=$W D=$D ITERS=$ITERS LABEL_SCENES='$LABEL_SCENES'; chain" \
    < /dev/null > $R/chain.log 2>&1 &
  sleep 5; pack_results speed r13
fi

if [ "$stage" = poll ]; then
  poll_labels speed r13
fi
