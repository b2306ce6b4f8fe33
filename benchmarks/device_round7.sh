# Session 6 on the GPU machine (`device` tool), from the repository root; carries .whl/ (gsplat 1.5.3,
# embreex). Stages, one `run` call each:
#   bash benchmarks/device_round7.sh A      build; GPU tests; bench scene; profile_step (host waits,
#                                          allocator, Chrome traces) of plain and UniC-Lift
#   bash benchmarks/device_round7.sh P ARGS profile_step of this tree again with ARGS (same scene)
set -u
W=/tmp/w; R=/tmp/r7; D=/tmp/data
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
stage=${1:-A}
source benchmarks/device_jobs.sh  # fresh_tree, bench_scene; shift

if [ "$stage" = A ]; then
  fresh_tree || exit 1
  bench_scene &
  python3 -m pytest -m gpu -q -p no:cacheprovider -x > $R/gpu_tests.log 2>&1; tail -15 $R/gpu_tests.log
  wait; echo "scene ready at ${SECONDS}s"
  python3 benchmarks/profile_step.py -s $D/bench --out $R/prof --variants plain unic --trace "$@" > $R/prof.log 2>&1
  echo "profile done at ${SECONDS}s"; cat $R/prof/profile.md | head -120
  cp $R/prof/profile.md $R/gpu_tests.log $OUT/; gzip -c $R/prof/trace_unic.json > $OUT/trace_unic.json.gz
  gzip -c $R/prof/trace_plain.json > $OUT/trace_plain.json.gz; ls -la $OUT
fi

if [ "$stage" = P ]; then  # P NAME [profile_step args...]
  name=$1; shift; rm -rf $W; mkdir -p $W; cp -r . $W; cd $W
  export PYTHONPATH=/tmp/site:$W PYTHONUNBUFFERED=1
  python3 benchmarks/profile_step.py -s $D/bench --out $R/$name --trace "$@" > $R/$name.log 2>&1 || tail -30 $R/$name.log
  head -60 $R/$name/profile.md; cp $R/$name/profile.md $OUT/$name.md
  for f in $R/$name/trace_*.json; do gzip -c $f > $OUT/$name-$(basename $f).gz; done; ls -la $OUT
fi
