#!/usr/bin/env bash
# Session-3 device round on one H200 (issues 9 and 10). From the repo root, with .whl/ carried (gsplat 1.5.3,
# embreex wheels; old.tar = `git archive be63a67`, the code before this session's changes, for the "before" runs):
#   bash benchmarks/device_round4.sh A      # build, scenes, torch.profiler tables, then the accuracy batch (background)
#   bash benchmarks/device_round4.sh poll   # wait for the batch; results to $OUT/acc.tgz
# Runs from a copy under /tmp/w (a later call re-sends the tree); results under /tmp/r4.
# The accuracy batch uses a shortened schedule (ITERS, densification until ITERS/2, L_triplet and L_3D from
# there) so that 8 runs side by side fit one device lease; runs share the GPU, so their seconds are not timings.
set -u
W=/tmp/w; R=/tmp/r4; D=/tmp/data
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
ITERS=${ITERS:-10000}
SCHED="--iterations $ITERS --densify_until_iter $((ITERS / 2)) --position_lr_max_steps $ITERS"
SCENES="messy:25:old_room:11 messy:100:large_corridor:12 messy:500:old_room:13 colmap:100:replica_like:14"
stage=${1:-A}

acc_job() {  # acc_job NAME SCENE CODE_DIR [train flags...]: train, decode sweep, labels, metrics, extraction
  local name=$1 scene=$2 code=$3; shift 3
  local M=$R/acc/$name
  mkdir -p $R/acc; cd $code
  { python3 train.py -s $scene -m $M --eval --quiet --test_iterations $ITERS --save_iterations $ITERS "$@" &&
    if [ -f benchmarks/decode_sweep.py ]; then
      python3 benchmarks/decode_sweep.py -m $M --json $M/sweep.json --quiet
      python3 render.py -m $M --skip_train --labels --quiet && python3 metrics.py -m $M
      python3 tools/objects.py evaluate -m $M --json $M/extract.json --quiet
      python3 tools/objects.py evaluate -m $M --keep_strays --json $M/extract_keep_strays.json --quiet
    else
      python3 render.py -m $M --skip_train --labels --quiet && python3 metrics.py -m $M
    fi
  } > $R/acc/$name.log 2>&1
  echo "exit $?" >> $R/acc/$name.log; touch $R/acc/$name.DONE
}

if [ "$stage" = A ]; then
  rm -rf $W /tmp/old; mkdir -p $W $R $D /tmp/old; cp -r . $W; tar xf .whl/old.tar -C /tmp/old; cd $W
  ( python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site
    python3 tools/make_scene.py --out $D/bench --objects 25 --views 186 --size 480x360 --noise realistic --seed 0 \
      --format panopli --workers 6 --quiet
    for spec in $SCENES; do IFS=: read fmt n layout seed <<< "$spec"
      python3 tools/make_scene.py --out $D/${fmt}${n} --objects $n --views 186 --size 480x360 --noise realistic \
        --layout $layout --seed $seed --format $fmt --workers 6 --quiet || echo "make_scene $spec failed"
    done > $R/make_scenes.log 2>&1; touch $R/scenes.DONE ) &
  source benchmarks/device_env.sh || exit 1
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  while [ ! -f $D/bench/splits.json ]; do sleep 3; done; sleep 5
  # kernel tables: 20 iterations after densification, every loss on (plain: the same iterations)
  for v in unic plain; do
    flags=(); [ $v = plain ] && flags=(--seg_dir none)
    python3 train.py -s $D/bench -m $R/prof_$v --quiet --iterations 1520 --densify_until_iter 1000 \
      --test_iterations -1 --save_iterations 1520 --torch_profile 1500 --profile "${flags[@]}" > $R/prof_$v.log 2>&1
    cp $R/prof_$v/torch_profile.txt $OUT/torch_profile_$v.txt; tail -16 $R/prof_$v.log
  done
  while [ ! -f $R/scenes.DONE ]; do sleep 5; done; tail -3 $R/make_scenes.log
  for spec in $SCENES; do IFS=: read fmt n layout seed <<< "$spec"
    extra=""; [ $fmt = colmap ] && extra="--seg_dir masks"
    setsid bash -c "$(declare -f acc_job); R=$R ITERS=$ITERS; acc_job ${fmt}${n} $D/${fmt}${n} $W $SCHED $extra" \
      < /dev/null > /dev/null 2>&1 &
  done
  for s in 0 1; do
    setsid bash -c "$(declare -f acc_job); R=$R ITERS=$ITERS; acc_job bench_new_s$s $D/bench $W $SCHED --seed $s" \
      < /dev/null > /dev/null 2>&1 &
    setsid bash -c "$(declare -f acc_job); R=$R ITERS=$ITERS; acc_job bench_old_s$s $D/bench /tmp/old $SCHED --seed $s" \
      < /dev/null > /dev/null 2>&1 &
  done
  sleep 30; ls $R/acc; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
fi

if [ "$stage" = poll ]; then
  for i in $(seq 1 ${POLL_ROUNDS:-57}); do
    n=$(ls $R/acc/*.DONE 2>/dev/null | wc -l); [ "$n" -ge 8 ] && break; sleep 10
  done
  for f in $R/acc/*.log; do echo "== $f"; tr '\r' '\n' < $f | grep -v '^\s*$' | tail -3; done
  tar czf $OUT/acc.tgz -C $R --exclude='*.ply' --exclude='*.pt' --exclude='*.pth' --exclude='renders' \
      --exclude='gt' --exclude='overlay' --exclude='pred_*' acc 2>/dev/null; ls -la $OUT
fi
