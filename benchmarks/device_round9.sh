# Session 6, third lease (`device` tool), from the repository root, carrying .whl/: build, GPU tests,
# the bench scene, bench_train of this tree (plain seed 0, UniC-Lift seeds 0 and 1, 4000 iterations,
# one run at a time), then profile_step of UniC-Lift while time is left (LIMIT seconds in all).
set -u
W=/tmp/w; R=/tmp/r9; D=/tmp/data; LIMIT=${LIMIT:-450}
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
source benchmarks/device_jobs.sh  # fresh_tree, bench_scene
fresh_tree || exit 1
bench_scene &
python3 -m pytest -m gpu -q -p no:cacheprovider > $R/gpu_tests.log 2>&1; tail -2 $R/gpu_tests.log
grep -E "^(FAILED|ERROR)" $R/gpu_tests.log; cp $R/gpu_tests.log $OUT/
wait; echo "scene ready at ${SECONDS}s"
python3 benchmarks/bench_train.py --scene $D/bench --out $R/a --iterations 4000 --variants plain unic --seeds 0 > $R/a.log 2>&1
cp $R/a/bench.md $OUT/bench_s0.md; cp $R/a/bench.json $OUT/bench_s0.json
python3 benchmarks/bench_train.py --scene $D/bench --out $R/b --iterations 4000 --variants unic --seeds 1 > $R/b.log 2>&1
cp $R/b/bench.md $OUT/bench_s1.md; cp $R/b/bench.json $OUT/bench_s1.json
grep -h "it/s" $R/a.log $R/b.log; echo "benches done at ${SECONDS}s"
left=$((LIMIT - SECONDS - 10))
if [ $left -gt 60 ]; then
  timeout $left python3 benchmarks/profile_step.py -s $D/bench --out $R/prof --variants unic > $R/prof.log 2>&1
  head -20 $R/prof/profile.md; cp $R/prof/profile.md $OUT/ 2>/dev/null
fi
ls $OUT
