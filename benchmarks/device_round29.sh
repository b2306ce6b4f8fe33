# Session 29 (issue 10), the `device` tool with carry [".whl", ".prebuilt", ".scene"], from the repository root.
# Stages, one `run` call each, on one machine (call the next at once: 30 s idle gives the machine back):
#   bash benchmarks/device_round29.sh A       the GPU tests; beside them the issue's quality check: UniC-Lift at 30k
#                                             with evaluation on the bench scene, QUALITY_SEEDS side by side (not a
#                                             timing; QUALITY_VARIANT: bench_train's variant, default unic); waits until A_WAIT (585) s
#   bash benchmarks/device_round29.sh B       waits for the quality runs, then profile_step at the issue's size
#                                             (PROFILE_VARIANTS, alternated), packs everything into $OUT
#   bash benchmarks/device_round29.sh T       whole timed runs at the issue's size (SPEED_VARIANTS, SPEED_SEEDS), one at
#                                             a time, alone on the GPU; a fresh machine needs A's GPU tests first
# RESULTS.md 32 has what came back. Session 29 ran A (GPU tests and the quality check), T (SPEED_SEEDS="0 1"), then B
#   twice (PROFILE_VARIANTS="plain unic", then PROFILE_STACKS=0 "unic plain unic plain"), all on tree 8d13ee9.
# Session 30 ran plan 1-2 below (RESULTS.md 33): the whole GPU suite passed on d43c5a9; at the issue's size the
#   default ran 1.26x, 1.45x and 1.30x plain on three machines (calls 3 and 4 each got a fresh machine); C and D
#   stay opt-in (faster on one machine, slower on the other, in step with the run order).
# Session 31's plan (issue 10), carry [".whl", ".prebuilt", ".scene"]; ask `status` first. The ratio follows the
#   machine: where the host keeps up (machine 2: plain 2.21 ms/it) both steps run near their GPU work, UniC-Lift's
#   about 1.6x plain's. So the candidates now are ones that cut GPU work, each timed against the default on ONE
#   machine, alternated, with bench_train's repeats (a repeated variant now runs again, 87298f8):
#   1. A_WAIT=585 SPEED_VARIANTS="plain unic unic:--seg_interval 2" SPEED_SEEDS=0 SPEED_EXTRA="--densify_until_iter
#      1200" bash benchmarks/device_round29.sh T   (T runs fresh_tree itself on a fresh machine; add GPU_TESTS via
#      stage A first if the tree changed since d43c5a9). --seg_interval 2 halves the 29 channels' forward, backward
#      and the loss graphs on average. Session 30's last call (RESULTS 33c, 6000 iterations) found it 7 % faster,
#      no longer 25c's 2.4x slower: less than halving the segmentation's share would give (13-16 %), since its steps
#      without segmentation still pay most of UniC-Lift's host path. Profile those steps (profile_step.py with
#      PROFILE_ARGS="--densify_until 1200 --warmup 1300" plus the flag) before the whole runs.
#   2. If it is faster by more than the spread: its quality at 30k with evaluation (stage A with QUALITY_SEEDS and
#      the variant added to bench_train's --variants), two seeds, against 32c (PSNR 33.79, PQ^scene 97.06/97.13).
#   Plain's ms/it, 2nd half (bench.md's new column) says which kind of machine a table came from.
# Session 31 ran 1-2 (RESULTS.md 34): --seg_interval 2 1.17x plain but -3.6-3.8 PQ^scene at 30k, stays opt-in.
# Session 32 (RESULTS.md 35) alternated D (--l3d_grad graph --loss_graph direct) with the old default on one machine:
#   SPEED_VARIANTS="plain unic D", then "D unic plain", then "unic D D unic" (SPEED_SEEDS 0, 1, 2); D faster in all
#   four pairs, now auto's choice on CUDA; then stage A (QUALITY_SEEDS="" A_WAIT=5) and T ("plain unic") on 45bec89.
set -u
W=/tmp/w; R=/tmp/r29; D=/tmp/data
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
stage=${1:-A}
source benchmarks/device_jobs.sh  # fresh_tree, bench_scene, gpu_tests

wait_until() {  # wait_until FILE...: until every FILE exists or A_WAIT seconds have passed in this call
  local f
  for f in "$@"; do
    while [ ! -f "$f" ] && [ $SECONDS -lt ${A_WAIT:-585} ]; do sleep 5; done
  done
}

pack() {
  local s
  for s in ${QUALITY_SEEDS:-0 1}; do
    cp $R/quality$s/bench.md $OUT/quality$s.md 2>/dev/null; cp $R/quality$s/bench.json $OUT/quality$s.json 2>/dev/null
  done
  cp $R/gpu_tests.log $R/profile/profile.md $R/profile/profile.json $R/speed/bench.md $R/speed/bench.json $OUT/ 2>/dev/null
  (cd $R && tar czf $OUT/r29_logs.tgz $(ls *.log 2>/dev/null) \
     $(find . -name train_log.jsonl -o -name train_stats.json -o -name results.json 2>/dev/null)) 2>/dev/null
  ls $OUT
}

if [ "$stage" = A ]; then
  fresh_tree || exit 1
  bench_scene 8
  export PYTHONPATH=/tmp/site:$W PYTHONUNBUFFERED=1
  for s in ${QUALITY_SEEDS-0 1}; do  # each in its own session, from W: it outlives this call
    setsid bash -c "cd $W; python3 benchmarks/bench_train.py --scene $D/bench --out $R/quality$s --iterations \
      ${QUALITY_ITERS:-30000} --seeds $s --variants '${QUALITY_VARIANT:-unic}' > $R/quality$s.log 2>&1; touch $R/quality$s.DONE" \
      < /dev/null > /dev/null 2>&1 &
  done
  [ "${GPU_TESTS:-1}" = 1 ] && gpu_tests
  wait_until $(for s in ${QUALITY_SEEDS-0 1}; do echo $R/quality$s.DONE; done)
  tail -n 4 $R/quality*.log 2>/dev/null; pack
fi

if [ "$stage" = B ]; then
  [ -d $R ] || { echo "no $R: a fresh machine; run stage A"; exit 3; }
  cd $W; export PYTHONPATH=/tmp/site:$W PYTHONUNBUFFERED=1
  wait_until $(for s in ${QUALITY_SEEDS:-0 1}; do echo $R/quality$s.DONE; done)
  tail -n 4 $R/quality*.log
  variant_list=(); IFS='|' read -ra variant_list <<< "$(echo "${PROFILE_VARIANTS:-plain unic plain unic}" | sed 's/ \(plain\|unic\)/|\1/g')"
  timeout $(( ${A_WAIT:-585} - SECONDS )) python3 benchmarks/profile_step.py -s $D/bench --out $R/profile \
    ${PROFILE_ARGS:---densify_until 1200 --warmup 1300} --variants "${variant_list[@]}" \
    $([ "${PROFILE_STACKS:-1}" = 1 ] && echo --stacks) > $R/profile.log 2>&1
  tail -n 30 $R/profile.md 2>/dev/null || tail -n 20 $R/profile.log; pack
fi

if [ "$stage" = T ]; then
  [ -d $W ] || fresh_tree || exit 1
  [ -d $W ] && cd $W; bench_scene 8; export PYTHONPATH=/tmp/site:$W PYTHONUNBUFFERED=1
  variant_list=(); IFS='|' read -ra variant_list <<< "$(echo "${SPEED_VARIANTS:-plain unic}" | sed 's/ \(plain\|unic\)/|\1/g')"
  timeout $(( ${A_WAIT:-585} - SECONDS )) python3 benchmarks/bench_train.py --scene $D/bench --out $R/speed \
    --iterations ${SPEED_ITERS:-30000} --seeds ${SPEED_SEEDS:-0 1} --no_eval --no_phases --variants "${variant_list[@]}" \
    -- ${SPEED_EXTRA:---densify_until_iter 1200} > $R/speed.log 2>&1
  tail -n 25 $R/speed/bench.md 2>/dev/null || tail -n 20 $R/speed.log; pack
fi
