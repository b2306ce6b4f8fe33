# Session 6, second lease (`device` tool), from the repository root; carries .whl/ and .before/ (`git
# archive` of 1077b05, the session's start). Stages, one `run` call each:
#   bash benchmarks/device_round8.sh A      build, GPU tests, bench scene, profile_step of this tree, then in
#                                          the background: bench_train after / before (4000 its, one at a time)
#   bash benchmarks/device_round8.sh poll   wait (<= WAIT s) for the benches, pack results into $OUT
set -u
W=/tmp/w; R=/tmp/r8; D=/tmp/data
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
stage=${1:-A}
source benchmarks/device_jobs.sh  # fresh_tree, bench_scene
chain() {
  cd $W; export PYTHONPATH=/tmp/site:$W PYTHONUNBUFFERED=1
  python3 benchmarks/bench_train.py --scene $D/bench --out $R/after --iterations 4000 --variants plain unic --seeds 0 > $R/after.log 2>&1
  python3 benchmarks/bench_train.py --scene $D/bench --out $R/after --iterations 4000 --variants unic --seeds 1 >> $R/after.log 2>&1
  touch $R/after.DONE
  (cd $W/.before && PYTHONPATH=/tmp/site:$W/.before python3 benchmarks/bench_train.py --scene $D/bench --out $R/before \
    --iterations 4000 --variants plain unic --seeds 0 > $R/before.log 2>&1 &&
   PYTHONPATH=/tmp/site:$W/.before python3 benchmarks/bench_train.py --scene $D/bench --out $R/before \
    --iterations 4000 --variants unic --seeds 1 >> $R/before.log 2>&1)
  touch $R/bench.DONE
}
pack() {
  cp $R/prof/profile.md $OUT/profile.md 2>/dev/null; cp $R/gpu_tests.log $OUT/ 2>/dev/null
  cp $R/after/bench.md $OUT/after.md 2>/dev/null; cp $R/before/bench.md $OUT/before.md 2>/dev/null
  cp $R/after/bench.json $OUT/after.json 2>/dev/null; cp $R/before/bench.json $OUT/before.json 2>/dev/null
  for f in $R/prof/trace_*.json; do [ -f $f ] && gzip -c $f > $OUT/$(basename $f).gz; done
  ls -la $OUT
}
if [ "$stage" = A ]; then
  fresh_tree || exit 1
  bench_scene &
  python3 -m pytest -m gpu -q -p no:cacheprovider > $R/gpu_tests.log 2>&1; tail -4 $R/gpu_tests.log
  grep -E "^(FAILED|ERROR)" $R/gpu_tests.log
  wait; echo "scene ready at ${SECONDS}s"
  python3 benchmarks/profile_step.py -s $D/bench --out $R/prof --variants plain unic --trace > $R/prof.log 2>&1
  echo "profile done at ${SECONDS}s"; head -40 $R/prof/profile.md
  setsid bash -c "$(declare -f chain); R=$R W=$W D=$D; chain" < /dev/null > $R/chain.log 2>&1 &
  sleep 2; pack
fi
if [ "$stage" = poll ]; then
  while [ ! -f $R/bench.DONE ] && [ $SECONDS -lt ${WAIT:-540} ]; do sleep 5; done
  grep -h "it/s" $R/after.log $R/before.log | tail -12
  cat $R/after/bench.md $R/before/bench.md 2>/dev/null | head -80
  pack
fi
