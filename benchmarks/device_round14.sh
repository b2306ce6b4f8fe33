# Next lease (`device` tool, carry .whl/), from the repository root. Stages, one `run` call each:
#   bash benchmarks/device_round14.sh A      build, scenes, GPU tests; starts the background chain
#   WAIT=540 bash benchmarks/device_round14.sh poll   wait for the chain, pack results (and decode dumps) into $OUT
# The chain: 1. speed (issue 10), alone on the GPU: where the step's time goes now that the tile kernel
# is the default (profile_step.py: UniC-Lift, and with the tile kernel's sparse product), then
# bench_train at 4000 iterations: plain, UniC-Lift, --feature_backward tile_sparse, --optimizer selective
# (gsplat's SelectiveAdam, never measured here);
# 2. labels at the full schedule, side by side (issue 9): an unseen COLMAP instance-only scene with 100 objects, and again the 100-object Messy-Rooms scene of RESULTS 11b (seed 72,
# where extraction missed its goal), now with the tile kernel: decode sweep + dump, extraction, things_ab.py
# with the union_fill / union_rescue rules.
# Never `pkill -f` a pattern that appears in the run's own command line (it kills the run).
set -u
W=/tmp/w; R=/tmp/r14; D=/tmp/data
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
ITERS=${ITERS:-30000}
LABEL_SCENES=${LABEL_SCENES:-"colmap100 messy100"}
stage=${1:-A}
source benchmarks/device_jobs.sh  # acc_job, fresh_tree, bench_scene, label_jobs, gpu_tests, start_chain, ...

chain() {
  cd $W; export PYTHONPATH=/tmp/site:$W PYTHONUNBUFFERED=1
  python3 benchmarks/profile_step.py -s $D/bench --out $R/profile --variants unic "unic:--feature_backward tile_sparse" \
    --warmup 2100 --steps 200 --densify_until 2000 > $R/profile.log 2>&1
  python3 benchmarks/bench_train.py --scene $D/bench --out $R/speed --iterations 4000 --seeds 0 \
    --variants plain unic "unic:--feature_backward tile_sparse" "unic:--optimizer selective" \
    > $R/speed.log 2>&1
  touch $R/speed.DONE
  label_jobs
}

if [ "$stage" = A ]; then
  fresh_tree || exit 1
  bench_scene 5 &
  python3 tools/make_scene.py --out $D/colmap100 --objects 100 --views 186 --size 480x360 --noise realistic \
    --layout replica_like --seed 74 --format colmap --workers 5 --quiet > $R/make_colmap100.log 2>&1 &
  python3 tools/make_scene.py --out $D/messy100 --objects 100 --views 186 --size 480x360 --noise realistic \
    --layout large_corridor --seed 72 --format messy --workers 5 --quiet > $R/make_messy100.log 2>&1 &
  gpu_tests
  wait; echo "scenes ready at ${SECONDS}s"
  start_chain
  sleep 5; pack_results speed r14
fi

if [ "$stage" = poll ]; then
  cat $R/profile/profile.md 2>/dev/null | head -60
  poll_labels speed r14
fi
