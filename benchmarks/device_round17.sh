# Next lease (`device` tool, carry .whl/), from the repository root. Stages, one `run` call each:
#   bash benchmarks/device_round17.sh A      build, scenes, GPU tests (labels chain); starts the background chain
#   WAIT=540 bash benchmarks/device_round17.sh poll   wait for the chain, pack results into $OUT
# CHAIN=labels (default): issue 9, train.py's default thing rule union_fill_masks (chosen offline on the
# dumps of RESULTS.md 14a) on two rooms it was not chosen on, side by side: replica_like seed 133 with 25
# objects, old_room seed 134 with 100 (Messy-Rooms format, realistic noise, 480x360, 186 views). Per room:
# train (30k), things_ab.py (union_fill, union_fill_rescue, union_fill_masks; the default's precision
# diagnosis; the rescue dump), then with ACC_STEPS=eval (the default here) the saved labels' PQ^scene and
# mIoU (render.py --labels, metrics.py) and tools/objects.py evaluate --reference box (the default's
# extraction as a user gets it); ACC_STEPS=full adds the decode sweep (about 4 minutes), ACC_STEPS=ab
# stops after things_ab. About 17 minutes with eval.
# LABEL_SCENES="messy25c messy100c colmap50c" adds an instance-only COLMAP room (large_corridor, 50 objects,
# seed 135): the default leaves the rescue out with instance masks only, a rule found on a CPU COLMAP room
# (RESULTS.md 14c) that needs a room of its own. A third room shares the GPU and slows the other two:
# CHAIN=labels then, not both.
# CHAIN=timing: issue 10's own measurement, alone on the GPU: plain 3DGS and UniC-Lift, 30 000 iterations,
# every default, bench scene; the GPU tests run while the scene is made (GPU_TESTS=0 skips them). About 12
# minutes (plain alone took 249 s in 13c).
# TIMING_VARIANTS="plain unic unic:--seg_interval=2" adds the features every second step: about 5 minutes more.
# CHAIN=both: the labels chain with things_ab left out of it, then the timing alone on the GPU (the bench
# scene is made on the CPU while the rooms train), then things_ab on both rooms: about 27 minutes to the
# timing's end, things_ab 3 more. Poll until R/ab.DONE; each poll packs what has finished.
# CHAIN=timing_labels: the timing alone first, then LABEL_SCENES (all scenes made in stage A, before the
# timing starts, so that it has the machine to itself). Session 13's plan: CHAIN=timing_labels
# LABEL_SCENES=messy500c AB_LATER=1: issue 10's 30k ratio, then a 500-object room at the full schedule
# with PQ^scene, mIoU and the default's and plain thresholding's extraction (issue 9's report); AB_LATER=1
# leaves out things_ab (about 3 minutes on a 2 M-Gaussian model), which would not fit. About 3 + 12 + 13
# minutes: poll with WAIT near the lease's budget_left.
# Never `pkill -f` a pattern that appears in the run's own command line (it kills the run).
set -u
W=/tmp/w; R=/tmp/r17; D=/tmp/data
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
ITERS=${ITERS:-30000}
export CHAIN=${CHAIN:-labels}
LABEL_SCENES=${LABEL_SCENES:-"messy25c messy100c"}
export ACC_STEPS=${ACC_STEPS:-eval} THING_RULES=${THING_RULES:-"union_fill union_fill_rescue union_fill_masks"} DIAGNOSE=${DIAGNOSE:-union_fill_masks}
stage=${1:-A}
source benchmarks/device_jobs.sh  # acc_job, fresh_tree, bench_scene, label_jobs, gpu_tests, start_chain, ...

timing() {
  python3 benchmarks/bench_train.py --scene $D/bench --out $R/speed --iterations $ITERS --seeds 0 \
    --variants ${TIMING_VARIANTS:-plain unic} > $R/speed.log 2>&1
  touch $R/speed.DONE
}

chain() {
  cd $W; export PYTHONPATH=/tmp/site:$W PYTHONUNBUFFERED=1
  case $CHAIN in
    timing) timing ;;
    labels) label_jobs ;;
    timing_labels)  # the timing alone first, then the label rooms (made in stage A, before the timing)
      timing
      label_jobs ;;
    both)  # the label rooms (side by side, things_ab left for later), then the timing alone, then things_ab
      bench_scene 6 &
      AB_LATER=1 label_jobs
      for s in $LABEL_SCENES; do while [ ! -f $R/acc/$s.DONE ]; do sleep 5; done; done
      wait; cd $W; timing
      for s in $LABEL_SCENES; do ab_step $s >> $R/acc/$s.log 2>&1 & done
      wait; touch $R/ab.DONE ;;
  esac
}

# make_label_scene NAME: one label room of LABEL_SCENES in D (Messy-Rooms format unless named colmap*)
make_label_scene() {
  local args
  case $1 in
    messy25c)  args="--objects 25 --layout replica_like --seed 133 --format messy" ;;
    messy100c) args="--objects 100 --layout old_room --seed 134 --format messy" ;;
    colmap50c) args="--objects 50 --layout large_corridor --seed 135 --format colmap" ;;  # instance-only
    messy500c) args="--objects 500 --layout large_corridor --seed 136 --format messy" ;;  # 11b's 500 was old_room
    *) echo "unknown label scene $1"; return 1 ;;
  esac
  python3 tools/make_scene.py --out $D/$1 --views 186 --size 480x360 --noise realistic $args --workers 5 \
    --quiet > $R/make_$1.log 2>&1
}

if [ "$stage" = A ]; then
  fresh_tree || exit 1
  case $CHAIN in timing|timing_labels) bench_scene 8 & ;; esac
  if [ "$CHAIN" != timing ]; then
    for s in $LABEL_SCENES; do make_label_scene $s & done
  fi
  [ "${GPU_TESTS:-1}" = 1 ] && gpu_tests  # on the GPU while the scenes are made on the CPU
  wait; echo "scenes ready at ${SECONDS}s"
  start_chain
  sleep 5; pack_results speed r17
fi

if [ "$stage" = poll ]; then
  case $CHAIN in
    timing)
      while [ ! -f $R/speed.DONE ] && [ $SECONDS -lt ${WAIT:-540} ]; do sleep 5; done
      grep -h "it/s" $R/speed.log | tail -3; pack_results speed r17 ;;
    labels|timing_labels) poll_labels speed r17 ;;
    both)  # returns when the labels are evaluated and the timing is done, or at WAIT
      while [ ! -f $R/ab.DONE ] && [ $SECONDS -lt ${WAIT:-540} ]; do sleep 5; done
      for s in $LABEL_SCENES; do echo "== $s"
        tr '\r' '\n' < $R/acc/$s.log 2>/dev/null | grep -E "PQ|median|outside|stage|exit|Error|\| union" | tail -12; done
      tr '\r' '\n' < $R/speed.log 2>/dev/null | grep -E "it/s|plain|unic" | tail -4
      pack_results speed r17 ;;
  esac
fi
