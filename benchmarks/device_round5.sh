# Session 4 on the GPU machine (`device` tool), from the repository root; carries .whl/ (gsplat 1.5.3,
# embreex). Stages, one `run` call each:
#   bash benchmarks/device_round5.sh A      build; smoke test of new code; background chain: scenes, speed
#                                          bench (alone), then label runs side by side + GPU tests
#   bash benchmarks/device_round5.sh bench  wait for the bench table
#   bash benchmarks/device_round5.sh poll   wait (<= 9.5 min) for the label runs, evaluate, pack results
# Results come back under $OUT: bench.md/json, gpu_tests.log, acc.tgz (logs, sweeps, dumps, extraction).
set -u
W=/tmp/w; R=/tmp/r5; D=/tmp/data
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
ITERS=${ITERS:-30000}
BENCH_ITERS=${BENCH_ITERS:-4000}
SCENES=${SCENES:-"messy:25:old_room:31 messy:100:large_corridor:32 messy:500:old_room:33"}
stage=${1:-A}

acc_job() {  # acc_job NAME SCENE [train flags...]: train, decode dump + sweep, labels, metrics, extraction
  local name=$1 scene=$2; shift 2
  local M=$R/acc/$name
  mkdir -p $R/acc; cd $W
  { python3 train.py -s $scene -m $M --eval --quiet --test_iterations $ITERS --save_iterations $ITERS "$@" &&
    python3 benchmarks/decode_sweep.py -m $M --json $M/sweep.json --dump $R/acc/${name}_dump.npz --quiet
    python3 render.py -m $M --skip_train --labels --quiet && python3 metrics.py -m $M
    for v in "default:" "keep_strays:--keep_strays" "fill:--fill_unseen" "fill_keep:--fill_unseen --keep_strays"; do
      python3 tools/objects.py evaluate -m $M --json $M/extract_${v%%:*}.json --quiet ${v#*:}
    done
  } > $R/acc/$name.log 2>&1
  echo "exit $?" >> $R/acc/$name.log; touch $R/acc/$name.DONE
}

chain() {  # background: scenes, speed bench (alone), then label runs side by side + GPU tests
  cd $W; export PYTHONPATH=/tmp/site:$W PYTHONUNBUFFERED=1
  python3 tools/make_scene.py --out $D/bench --objects 25 --views 186 --size 480x360 --noise realistic --seed 0 \
    --format panopli --workers 4 --quiet &
  for spec in $SCENES; do IFS=: read fmt n layout seed <<< "$spec"
    python3 tools/make_scene.py --out $D/${fmt}${n} --objects $n --views 186 --size 480x360 --noise realistic \
      --layout $layout --seed $seed --format $fmt --workers 4 --quiet || echo "make_scene $spec failed" &
  done; wait
  touch $R/scenes.DONE
  while [ ! -f /tmp/smoke/OK ] && [ ! -f /tmp/smoke/FAILED ]; do sleep 2; done
  python3 benchmarks/bench_train.py --scene $D/bench --out $R/bench --iterations $BENCH_ITERS \
    --variants plain unic "unic:--semantic_head embed --semantic_dim 17" > $R/bench.log 2>&1
  touch $R/bench.DONE
  [ -f /tmp/smoke/OK ] || return
  for spec in $SCENES; do IFS=: read fmt n layout seed <<< "$spec"
    extra=""; [ $fmt = colmap ] && extra="--seg_dir masks"
    setsid bash -c "$(declare -f acc_job); R=$R W=$W ITERS=$ITERS; acc_job ${fmt}${n} $D/${fmt}${n} $extra" \
      < /dev/null > /dev/null 2>&1 &
  done
  python3 -m pytest -m gpu -q -p no:cacheprovider > $R/gpu_tests.log 2>&1; touch $R/gpu_tests.DONE
}

if [ "$stage" = A ]; then
  rm -rf $W $R /tmp/smoke; mkdir -p $W $R $D /tmp/smoke; cp -r . $W; cd $W
  source benchmarks/device_env.sh || exit 1
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  setsid bash -c "$(declare -f chain acc_job); R=$R W=$W D=$D ITERS=$ITERS BENCH_ITERS=$BENCH_ITERS SCENES='$SCENES'; chain" \
    < /dev/null > $R/chain.log 2>&1 &
  # smoke test of the new code paths on a tiny model while the scenes are generated
  { python3 tools/make_scene.py --out /tmp/smoke/s --objects 12 --views 60 --size 160x120 --seed 5 --format messy --quiet &&
    python3 train.py -s /tmp/smoke/s -m /tmp/smoke/m --eval --quiet --iterations 1500 &&
    python3 benchmarks/decode_sweep.py -m /tmp/smoke/m --json /tmp/smoke/sweep.json --dump /tmp/smoke/d.npz --quiet | head -5 &&
    python3 benchmarks/decode_sweep.py -m /tmp/smoke/d.npz --from_dump | head -14 &&
    python3 tools/objects.py evaluate -m /tmp/smoke/m --quiet &&
    python3 tools/objects.py evaluate -m /tmp/smoke/m --quiet --fill_unseen; } > /tmp/smoke/log 2>&1 \
    && touch /tmp/smoke/OK || touch /tmp/smoke/FAILED
  cat /tmp/smoke/log; ls /tmp/smoke; cp /tmp/smoke/d.npz $OUT/smoke_dump.npz 2>/dev/null
  while [ ! -f $R/scenes.DONE ]; do sleep 3; done; ls $D
  while [ ! -f $R/bench.DONE ] && [ $SECONDS -lt 540 ]; do sleep 5; done
  cat $R/bench/bench.md 2>/dev/null || tail -5 $R/bench.log
fi

if [ "$stage" = bench ]; then  # wait for the speed bench, then report
  while [ ! -f $R/bench.DONE ] && [ $SECONDS -lt ${WAIT:-540} ]; do sleep 5; done
  cp $R/bench/bench.md $R/bench/bench.json $OUT/ 2>/dev/null; cat $R/bench/bench.md 2>/dev/null || tail -5 $R/bench.log
  sleep 60; tail -3 $R/gpu_tests.log 2>/dev/null; ls $R/acc 2>/dev/null
fi

if [ "$stage" = poll ]; then
  n_jobs=$(echo $SCENES | wc -w)
  for i in $(seq 1 ${POLL_ROUNDS:-57}); do
    n=$(ls $R/acc/*.DONE 2>/dev/null | wc -l); [ "$n" -ge "$n_jobs" ] && break; sleep 10
  done
  cp $R/gpu_tests.log $R/bench/bench.md $R/bench/bench.json $OUT/ 2>/dev/null
  for f in $R/acc/*.log; do echo "== $f"; tr '\r' '\n' < $f | grep -v '^\s*$' | tail -4; done
  for m in $R/acc/*/; do tail -1 $m/train_log.jsonl 2>/dev/null | cut -c1-200; done
  tar czf $OUT/acc.tgz -C $R --exclude='*.ply' --exclude='*.pt' --exclude='*.pth' --exclude='renders' \
      --exclude='gt' --exclude='overlay' --exclude='pred_*' acc 2>/dev/null; ls -la $OUT
fi

