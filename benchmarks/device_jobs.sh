# Shared by the device_round scripts (source it): label jobs run on the GPU machine.
# acc_job NAME SCENE [train flags...]: train (ITERS iterations), the thing rules THING_RULES (things_ab.py:
# surface and box references, with the default's precision diagnosis; each rule costs minutes on a 2 M
# Gaussian model; --dump writes the rescue dump for rescue_gates.py), then with ACC_STEPS=full (the
# default) labels, metrics, the default's extraction per object (box reference) and the decode sweep + dump
# (ACC_STEPS=eval leaves out the sweep, ACC_STEPS=ab stops after things_ab: about 4 minutes less each;
# AB_LATER=1 leaves things_ab to the calling chain, ab_step). The extraction is measured twice: with the
# default's ids and with plain thresholding's (`--decode plain`), as issue 9 asks.
# Needs R (results) and W (tree).
acc_job() {
  local name=$1 scene=$2; shift 2
  local M=$R/acc/$name
  mkdir -p $R/acc; cd $W
  { echo "stage start $(date +%s)"
    python3 train.py -s $scene -m $M --eval --quiet --test_iterations $ITERS --save_iterations $ITERS "$@" &&
    echo "stage trained $(date +%s)" &&
    { [ "${AB_LATER:-0}" = 1 ] || ab_step $name; }
    if [ "${ACC_STEPS:-full}" != ab ]; then
      python3 render.py -m $M --skip_train --labels --quiet && python3 metrics.py -m $M
      python3 tools/objects.py evaluate -m $M --json $M/extract_box.json --reference box --quiet
      python3 tools/objects.py evaluate -m $M --json $M/extract_box_plain.json --reference box --decode plain --quiet
      echo "stage evaluated $(date +%s)"
    fi
    if [ "${ACC_STEPS:-full}" = full ]; then
      python3 benchmarks/decode_sweep.py -m $M --json $M/sweep.json --dump $R/acc/${name}_dump.npz --quiet
    fi
  } > $R/acc/$name.log 2>&1
  echo "exit $?" >> $R/acc/$name.log; touch $R/acc/$name.DONE
}

# ab_step NAME: things_ab.py on the trained model R/acc/NAME (acc_job runs it after training; with
# AB_LATER=1 the calling chain runs it later, e.g. after a timing run that must have the GPU alone).
ab_step() {
  local M=$R/acc/$1
  cd $W
  python3 benchmarks/things_ab.py -m $M --json $M/things_ab.json --dump $R/acc/${1}_rescue.npz \
    --diagnose ${DIAGNOSE:-union_fill_masks} --rules ${THING_RULES:-union union_fill union_fill_masks}
  echo "stage things_ab $(date +%s)"
}

# chain_alive: a poll's first step. The machine goes back after 30 s idle, and a later call gets a bare one:
# then R is gone and waiting would only spend device time (session 15 lost 9 minutes so). Exits 3 with a
# one-line reason; start again with stage A.
chain_alive() {
  [ -f $R/chain.log ] && return 0
  echo "no chain on this machine ($R/chain.log missing): the machine was given back and this is a fresh one; run stage A again"
  exit 3
}

# fresh_tree: a copy of the sent tree in W (runs survive the next call's re-send), the carried wheels
# installed, gsplat built; R and D made. Run from the repository root.
fresh_tree() {
  rm -rf $W $R; mkdir -p $W $R $D; cp -r . $W; cd $W
  source benchmarks/device_env.sh || return 1
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
}

# bench_scene [WORKERS]: the speed benchmark's scene (PanopLi, 25 objects, 480x360, 186 views) in D/bench; copied
# from .scene/bench when the call carried it (made here by the same command, 27 MB: a fresh machine saves ~70 s).
bench_scene() {
  [ -d $D/bench ] || [ ! -d .scene/bench ] || cp -r .scene/bench $D/bench
  [ -d $D/bench ] || python3 tools/make_scene.py --out $D/bench --objects 25 --views 186 --size 480x360 \
      --noise realistic --seed 0 --format panopli --workers ${1:-10} --quiet > $R/make_bench.log 2>&1
}

# label_jobs: acc_job for every scene of LABEL_SCENES (in D), side by side, each in its own session; waits.
# Scenes named colmap* train on their instance-only masks (--seg_dir masks).
label_jobs() {
  for s in $LABEL_SCENES; do
    local extra=""; case $s in colmap*) extra="--seg_dir masks";; esac
    setsid bash -c "$(declare -f acc_job ab_step); R=$R W=$W ITERS=$ITERS ACC_STEPS=${ACC_STEPS:-full} AB_LATER=${AB_LATER:-0} THING_RULES='${THING_RULES:-union union_fill union_fill_masks}' DIAGNOSE=${DIAGNOSE:-union_fill_masks}; acc_job $s $D/$s $extra" < /dev/null > /dev/null 2>&1 &
  done
  wait
}

# pack_results SPEED TAG: the bench_train table of R/SPEED, the GPU test log and R (without models or
# images; with the decode dumps, about 1 MB each, for decode_sweep.py --from_dump) as TAG.tgz into OUT;
# the rescue dumps (things_ab.py --dump, two files of up to ~12 MB per scene) beside it, one file each.
pack_results() {
  cp $R/$1/bench.md $OUT/$1.md 2>/dev/null; cp $R/$1/bench.json $OUT/$1.json 2>/dev/null
  cp $R/gpu_tests.log $OUT/ 2>/dev/null
  cp $R/acc/*_rescue*.npz $OUT/ 2>/dev/null
  tar czf $OUT/$2.tgz -C $R --exclude='*.ply' --exclude='*.pt' --exclude='*.pth' --exclude='renders' --exclude='gt' \
      --exclude='overlay' --exclude='pred_*' --exclude='point_cloud' --exclude='*_rescue*.npz' . 2>/dev/null
  ls -la $OUT
}

# poll_labels SPEED TAG: wait (<= WAIT s) for the last label scene, print the speed lines and each scene's
# summary, pack. Never `pkill -f` a pattern that appears in the calling command line: it kills the call.
poll_labels() {
  local last=${LABEL_SCENES##* }
  while [ ! -f $R/acc/$last.DONE ] && [ $SECONDS -lt ${WAIT:-540} ]; do sleep 5; done
  grep -h "it/s" $R/$1.log 2>/dev/null | tail -5
  for s in $LABEL_SCENES; do echo "== $s"
    tr '\r' '\n' < $R/acc/$s.log 2>/dev/null | grep -E "PQ|median|missed|outside|dump|exit|Error|\| union" | tail -10
    tr '\r' '\n' < $R/acc/$s.log 2>/dev/null | grep -E "it/s" | tail -1; done
  pack_results $1 $2
}

# gpu_tests: pytest -m gpu into R/gpu_tests.log; prints the summary and the first failures.
gpu_tests() {
  # The step kernels' tests first, in their own process: a faulting kernel poisons its CUDA context, and
  # with it every later test of the same process.
  python3 -m pytest -m gpu -q -p no:cacheprovider tests/test_step_ops.py > $R/gpu_tests_step_ops.log 2>&1
  tail -n 2 $R/gpu_tests_step_ops.log; grep -E "^FAILED|^E  " $R/gpu_tests_step_ops.log | head -20
  python3 -m pytest -m gpu -q -p no:cacheprovider --ignore=tests/test_step_ops.py > $R/gpu_tests.log 2>&1
  tail -n 2 $R/gpu_tests.log; grep -E "^FAILED|^E  " $R/gpu_tests.log | head -20
  cat $R/gpu_tests_step_ops.log >> $R/gpu_tests.log
}

# start_chain: runs the calling script's chain() (with acc_job, ab_step, label_jobs, bench_scene and, where
# the script defines it, timing) in its own session, so it outlives this call; its output goes to
# R/chain.log.
start_chain() {
  setsid bash -c "$(declare -f chain acc_job ab_step label_jobs bench_scene; declare -f timing); R=$R W=$W D=$D ITERS=$ITERS ACC_STEPS=${ACC_STEPS:-full} LABEL_SCENES='$LABEL_SCENES'; chain" \
    < /dev/null > $R/chain.log 2>&1 &
}

# tables_chain: paper_tables.py for each table of TABLES (device_tables.sh, device_round18.sh), results in R.
# Needs R, W, D, TABLES, SEEDS, ITERS, JOBS, SIZE, VIEWS, GPUS (TABLE_ARGS optional).
# table_args T: TABLE_ARGS_T if set (e.g. TABLE_ARGS_tab5="--scene_seeds 4" beside TABLE_ARGS_tab1="--objects 25"),
# else TABLE_ARGS.
table_args() {
  local v="TABLE_ARGS_$1"
  echo "${!v-${TABLE_ARGS:-}}"
}

tables_chain() {
  cd $W; export PYTHONPATH=/tmp/site:$W PYTHONUNBUFFERED=1
  mkdir -p $R/paper
  for t in $TABLES; do
    python3 benchmarks/paper_tables.py $t --out $R/paper/$t --runs $R/runs --scenes_dir $D/paper \
      --figure $R/paper/$t.png --iterations $ITERS --seeds $SEEDS --gpus "$GPUS" --jobs_per_gpu $JOBS \
      --size $SIZE --views $VIEWS --workers 8 $(table_args $t) > $R/$t.log 2>&1
    echo "exit $?" >> $R/$t.log; touch $R/$t.DONE
  done
}

# pack_tables: the tables (md, json), figures and logs, without models or scenes, as OUT/tables.tgz; every
# run's small JSON files (train_stats, results, extraction: rows of a table cut short by the lease can be
# rebuilt here with paper_tables.py --collect; train_log.jsonl: seconds and Gaussians every 100 iterations, to see
# which part of a run was slow) as OUT/runs_json.tgz
pack_tables() {
  tar czf $OUT/tables.tgz -C $R --exclude='runs' paper $(cd $R && ls *.log 2>/dev/null) 2>/dev/null
  [ -d $R/runs ] && (cd $R && find runs \( -name '*.json' -o -name 'train_log.jsonl' \) -size -2M | tar czf $OUT/runs_json.tgz -T -)
  ls -la $OUT
}
