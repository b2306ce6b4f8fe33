#!/usr/bin/env bash
# Session-3 device round on one H200 (issues 9 and 10). Run from the repo root with the wheels in .whl/
# (gsplat 1.5.3, embreex) and, for the "before" runs, .whl/old.tar (git archive of the commit before).
#   bash benchmarks/device_round4.sh A      # build, GPU tests, timing bench (alone), then the accuracy batch
#   bash benchmarks/device_round4.sh poll   # wait for the batch, print progress; copies results to $OUT
# Everything runs from a copy under /tmp/w (a later call re-sends the tree), results under /tmp/r4.
set -u
W=/tmp/w; R=/tmp/r4; D=/tmp/data
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
stage=${1:-A}
SCENES="messy:25:old_room:11 messy:100:large_corridor:12 messy:500:old_room:13 colmap:100:replica_like:14"

acc_job() {  # acc_job NAME SCENE [train flags...]: full schedule, decode sweep, labels, metrics, extraction
  local name=$1 scene=$2; shift 2
  local M=$R/acc/$name
  mkdir -p $R/acc
  { python3 train.py -s $scene -m $M --eval --quiet --test_iterations 30000 "$@" &&
    python3 benchmarks/decode_sweep.py -m $M --json $M/sweep.json --quiet &&
    python3 render.py -m $M --skip_train --labels --quiet && python3 metrics.py -m $M &&
    python3 tools/objects.py evaluate -m $M --json $M/extract.json --quiet &&
    python3 tools/objects.py evaluate -m $M --keep_strays --json $M/extract_raw.json --quiet &&
    python3 tools/objects.py evaluate -m $M --decode plain --json $M/extract_plain.json --quiet
  } > $R/acc/$name.log 2>&1
  echo "exit $?" >> $R/acc/$name.log; touch $R/acc/$name.DONE
}

if [ "$stage" = A ]; then
  rm -rf $W; mkdir -p $W $R $D; cp -r . $W; cd $W
  source benchmarks/device_env.sh || exit 1
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  ( for spec in $SCENES; do IFS=: read fmt n layout seed <<< "$spec"
      python3 tools/make_scene.py --out $D/${fmt}${n} --objects $n --views 186 --size 480x360 --noise realistic \
        --layout $layout --seed $seed --format $fmt --workers 6 --quiet || echo "make_scene $spec failed"
    done > $R/make_scenes.log 2>&1; touch $R/scenes.DONE ) &
  python3 -m pytest -q -m gpu tests -p no:cacheprovider -rs 2>&1 | tee $OUT/gpu_tests.log | tail -25
  python3 benchmarks/bench_train.py --out $R/bench --variants plain unic --seeds 0 > $R/bench.log 2>&1
  cat $R/bench/bench.md; cp $R/bench/bench.md $R/bench/bench.json $OUT/ 2>/dev/null
  while [ ! -f $R/scenes.DONE ]; do sleep 5; done; cat $R/make_scenes.log | tail -5
  # the accuracy batch, in the background (4 scenes + a second seed of the bench scene)
  for spec in $SCENES; do IFS=: read fmt n layout seed <<< "$spec"
    extra=(); [ $fmt = colmap ] && extra=(--seg_dir masks)
    setsid bash -c "$(declare -f acc_job); R=$R; acc_job ${fmt}${n} $D/${fmt}${n} ${extra[*]}" < /dev/null > /dev/null 2>&1 &
  done
  setsid bash -c "$(declare -f acc_job); R=$R; acc_job bench_s1 $R/bench/scene --seed 1" < /dev/null > /dev/null 2>&1 &
  sleep 20; ls $R/acc
fi

if [ "$stage" = poll ]; then
  cd $W || exit 1
  for i in $(seq 1 ${POLL_ROUNDS:-55}); do
    n=$(ls $R/acc/*.DONE 2>/dev/null | wc -l); [ "$n" -ge 5 ] && break; sleep 10
  done
  for f in $R/acc/*.log; do echo "== $f"; tr '\r' '\n' < $f | grep -v '^\s*$' | tail -4; done
  tar czf $OUT/acc.tgz -C $R acc --exclude='*.ply' --exclude='*.pt' --exclude='renders' --exclude='gt' \
      --exclude='overlay' --exclude='pred_*' --exclude='chkpnt*' 2>/dev/null; ls -la $OUT
fi
