#!/usr/bin/env bash
# The UniC-Lift headline (RESULTS.md section 4): fresh machine, build, generate the benchmark scene,
# then the full 30k-iteration schedule at 320x240 (-r 2) with every default, alone on the GPU, in
# the background (setsid); poll with `bash benchmarks/device_poll.sh /tmp/r3`.
#   SWEEP_FORMAT=messy SWEEP_OBJECTS=50 bash benchmarks/device_round3.sh   # the 50-object instance scene
source benchmarks/device_env.sh || exit 1
OBJ=${SWEEP_OBJECTS:-25}; FMT=${SWEEP_FORMAT:-panopli}
S=/tmp/data/bench_${FMT}${OBJ}
[ -d $S ] || python3 tools/make_scene.py --out $S --objects $OBJ --views 200 --size 640x480 --noise realistic \
    --seed 0 --format $FMT --workers 16 > /tmp/make_scene.log 2>&1
mkdir -p /tmp/r3
setsid bash -c "python3 train.py -s $S -m /tmp/r3/unic -r 2 --test_iterations 30000 --save_iterations 15000 30000 > /tmp/r3/unic.log 2>&1 && python3 render.py -m /tmp/r3/unic --skip_train --labels --quiet >> /tmp/r3/unic.log 2>&1 && python3 metrics.py -m /tmp/r3/unic >> /tmp/r3/unic.log 2>&1; touch /tmp/r3/DONE" < /dev/null > /dev/null 2>&1 &
sleep 60; tr '\r' '\n' < /tmp/r3/unic.log | grep Training | tail -1
