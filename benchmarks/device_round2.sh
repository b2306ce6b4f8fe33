#!/usr/bin/env bash
# Device round 2 (start it in one call, poll with `cat /tmp/r2/status` in later calls):
#   1. the headline UniC-Lift run: 640x480, 200 views, 25 objects, realistic noise, full 30k schedule
#   2. the open-choice sweep (benchmarks/sweep_open_choices.sh), concurrently on the same GPU
# Everything it writes lands in /tmp/r2; the last poll copies the summaries to $OUT.
source benchmarks/device_env.sh || exit 1
SCENE=/tmp/data/bench_room25
mkdir -p /tmp/r2
[ -d $SCENE ] || python3 tools/make_scene.py --out $SCENE --objects 25 --views 200 --size 640x480 \
    --noise realistic --seed 0 --workers 16 > /tmp/r2/make_scene.log 2>&1
setsid bash -c "
  export PYTHONPATH=$PYTHONPATH PYTHONUNBUFFERED=1
  python3 train.py -s $SCENE -m /tmp/r2/unic --checkpoint_iterations 15000 25000 --test_iterations 30000 \
      --save_iterations 15000 30000 > /tmp/r2/unic.log 2>&1 &&
  python3 render.py -m /tmp/r2/unic --skip_train --labels --quiet >> /tmp/r2/unic.log 2>&1 &&
  python3 metrics.py -m /tmp/r2/unic >> /tmp/r2/unic.log 2>&1; touch /tmp/r2/UNIC_DONE
" < /dev/null > /dev/null 2>&1 &
setsid bash -c "export PYTHONPATH=$PYTHONPATH; bash benchmarks/sweep_open_choices.sh $SCENE /tmp/r2/sweep > /tmp/r2/sweep.md 2>&1; touch /tmp/r2/SWEEP_DONE" \
    < /dev/null > /dev/null 2>&1 &
sleep 60
tr '\r' '\n' < /tmp/r2/unic.log | tail -2
