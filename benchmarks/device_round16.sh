# Next lease (`device` tool, carry .whl/), from the repository root. Stages, one `run` call each:
#   bash benchmarks/device_round16.sh A      build, scenes, GPU tests (labels chain); starts the background chain
#   WAIT=540 bash benchmarks/device_round16.sh poll   wait for the chain, pack results into $OUT
# CHAIN=labels (default): issue 9, the thing rules at the full schedule on the two Messy-Rooms scenes of
# RESULTS.md 13 (old_room seed 91, 25 objects; large_corridor seed 72, 100 objects), side by side:
# things_ab.py scores union, union_fill (the default again), union_fill_rescue (the rescue kept to each
# object's extent) and union_fill_rescue_ungated (13b's rule), and breaks the rescue's precision down;
# then PQ^scene, the default's extraction, the decode sweep. About 20 minutes. Each scene's rescue dump
# (things_ab.py --dump: MESSY_rescue.npz and MESSY_rescue_means.npz) comes back beside r16.tgz: score
# the rescue's gates from it here with `python benchmarks/rescue_gates.py messy100_rescue.npz`.
# CHAIN=timing: issue 10's own measurement, alone on the GPU: plain 3DGS and UniC-Lift, 30 000 iterations,
# every default, bench scene, no GPU tests. About 11 minutes (plain alone took 249 s in 13c).
# TIMING_VARIANTS="plain unic unic:--seg_interval=2" adds the features every second step (1.45x -> ? at
# 4000 iterations in 11a; its quality at the full schedule is the question): about 5 minutes more.
# The two chains do not fit in one lease's 30 minutes. ACC_STEPS=ab stops each label job after things_ab
# (the decoding and PQ^scene of these two scenes are in RESULTS.md 13a): about 4 minutes less.
# Never `pkill -f` a pattern that appears in the run's own command line (it kills the run).
set -u
W=/tmp/w; R=/tmp/r16; D=/tmp/data
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
ITERS=${ITERS:-30000}
CHAIN=${CHAIN:-labels}
LABEL_SCENES=${LABEL_SCENES:-"messy25 messy100"}
stage=${1:-A}
source benchmarks/device_jobs.sh  # acc_job, fresh_tree, bench_scene, label_jobs, gpu_tests, start_chain, ...

chain() {
  cd $W; export PYTHONPATH=/tmp/site:$W PYTHONUNBUFFERED=1
  if [ "$CHAIN" = timing ]; then
    python3 benchmarks/bench_train.py --scene $D/bench --out $R/speed --iterations $ITERS --seeds 0 \
      --variants ${TIMING_VARIANTS:-plain unic} > $R/speed.log 2>&1
    touch $R/speed.DONE
  else
    label_jobs
  fi
}

if [ "$stage" = A ]; then
  fresh_tree || exit 1
  if [ "$CHAIN" = timing ]; then
    bench_scene 10
  else
    python3 tools/make_scene.py --out $D/messy25 --objects 25 --views 186 --size 480x360 --noise realistic \
      --layout old_room --seed 91 --format messy --workers 5 --quiet > $R/make_messy25.log 2>&1 &
    python3 tools/make_scene.py --out $D/messy100 --objects 100 --views 186 --size 480x360 --noise realistic \
      --layout large_corridor --seed 72 --format messy --workers 5 --quiet > $R/make_messy100.log 2>&1 &
  fi
  [ "$CHAIN" = timing ] || gpu_tests
  wait; echo "scenes ready at ${SECONDS}s"
  start_chain
  sleep 5; pack_results speed r16
fi

if [ "$stage" = poll ]; then
  if [ "$CHAIN" = timing ]; then
    while [ ! -f $R/speed.DONE ] && [ $SECONDS -lt ${WAIT:-540} ]; do sleep 5; done
    grep -h "it/s" $R/speed.log | tail -3; pack_results speed r16
  else
    poll_labels speed r16
  fi
fi
