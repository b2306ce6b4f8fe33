# Session 5 on the GPU machine (`device` tool), from the repository root; carries .whl/ (gsplat 1.5.3,
# embreex) and .before/ (`git archive` of the commit before the speed work, for same-machine
# before/after timing). Stages, one `run` call each:
#   bash benchmarks/device_round6.sh A      build; background chain: scenes, profile_step (after),
#                                          bench_train before/after (alone on the GPU, one run at a
#                                          time), then the 100-object full-schedule label run + GPU tests
#   bash benchmarks/device_round6.sh poll   wait (<= WAIT s) for the chain, pack results into $OUT
set -u
W=/tmp/w; R=/tmp/r6; D=/tmp/data
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
BENCH_ITERS=${BENCH_ITERS:-4000}
ITERS=${ITERS:-30000}
stage=${1:-A}

source benchmarks/device_jobs.sh  # acc_job

chain() {
  cd $W; export PYTHONPATH=/tmp/site:$W PYTHONUNBUFFERED=1
  python3 tools/make_scene.py --out $D/bench --objects 25 --views 186 --size 480x360 --noise realistic --seed 0 \
    --format panopli --workers 6 --quiet &
  python3 tools/make_scene.py --out $D/messy100 --objects 100 --views 186 --size 480x360 --noise realistic \
    --layout large_corridor --seed 32 --format messy --workers 8 --quiet > $R/make100.log 2>&1 &
  wait; touch $R/scenes.DONE  # nothing else runs while the timings below run
  # 1. where the step's time goes, after (alone)
  python3 benchmarks/profile_step.py -s $D/bench --out $R/prof --warmup 1600 --densify_until 1500 --steps 200 \
    --variants plain unic > $R/prof.log 2>&1
  # 2. speed + quality, alone, one run at a time: after (this tree), then before (.before)
  python3 benchmarks/bench_train.py --scene $D/bench --out $R/after --iterations $BENCH_ITERS --variants plain unic \
    --seeds 0 > $R/after.log 2>&1
  python3 benchmarks/bench_train.py --scene $D/bench --out $R/after --iterations $BENCH_ITERS --variants unic \
    --seeds 1 >> $R/after.log 2>&1
  (cd $W/.before && PYTHONPATH=/tmp/site:$W/.before python3 benchmarks/bench_train.py --scene $D/bench --out $R/before \
    --iterations $BENCH_ITERS --variants plain unic --seeds 0 > $R/before.log 2>&1 &&
   PYTHONPATH=/tmp/site:$W/.before python3 benchmarks/bench_train.py --scene $D/bench --out $R/before \
    --iterations $BENCH_ITERS --variants unic --seeds 1 >> $R/before.log 2>&1)
  touch $R/bench.DONE
  # 3. labels at the full schedule (issue 9) and the GPU tests, side by side
  setsid bash -c "$(declare -f acc_job); R=$R W=$W ITERS=$ITERS; acc_job messy100 $D/messy100" < /dev/null > /dev/null 2>&1 &
  python3 -m pytest -m gpu -q -p no:cacheprovider > $R/gpu_tests.log 2>&1; touch $R/gpu_tests.DONE
}

pack() {
  cp $R/prof/profile.md $OUT/profile.md 2>/dev/null
  cp $R/after/bench.md $OUT/after.md 2>/dev/null; cp $R/before/bench.md $OUT/before.md 2>/dev/null
  cp $R/gpu_tests.log $OUT/ 2>/dev/null
  tar czf $OUT/r6.tgz -C $R --exclude='*.ply' --exclude='*.pt' --exclude='*.pth' --exclude='renders' --exclude='gt' \
      --exclude='overlay' --exclude='pred_*' --exclude='point_cloud' . 2>/dev/null
  ls -la $OUT
}

if [ "$stage" = A ]; then
  rm -rf $W $R; mkdir -p $W $R $D; cp -r . $W; cd $W
  source benchmarks/device_env.sh || exit 1
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  git log --oneline -1 2>/dev/null
  setsid bash -c "$(declare -f chain acc_job); R=$R W=$W D=$D ITERS=$ITERS BENCH_ITERS=$BENCH_ITERS; chain" \
    < /dev/null > $R/chain.log 2>&1 &
  while [ ! -f $R/bench.DONE ] && [ $SECONDS -lt ${WAIT:-540} ]; do sleep 5; done
  cat $R/prof.log 2>/dev/null | head -30; cat $R/after/bench.md $R/before/bench.md 2>/dev/null | head -60
  pack
fi

if [ "$stage" = poll ]; then
  while [ ! -f $R/acc/messy100.DONE ] && [ $SECONDS -lt ${WAIT:-540} ]; do sleep 5; done
  cat $R/prof.log 2>/dev/null | head -30; cat $R/after/bench.md $R/before/bench.md 2>/dev/null | head -60
  tail -3 $R/gpu_tests.log 2>/dev/null
  tr '\r' '\n' < $R/acc/messy100.log 2>/dev/null | grep -v '^\s*$' | tail -30
  tail -1 $R/acc/messy100/train_log.jsonl 2>/dev/null | cut -c1-300
  pack
fi
