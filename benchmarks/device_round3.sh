#!/usr/bin/env bash
# Round 3 (what produced the headline UniC-Lift numbers in RESULTS.md): fresh machine, build,
# generate the benchmark scene, then the full 30k-iteration UniC-Lift schedule at 320x240 (-r 2),
# alone on the GPU, in the background; poll /tmp/r3/unic.log.
source benchmarks/device_env.sh || exit 1
S=/tmp/data/bench_room25
python3 tools/make_scene.py --out $S --objects 25 --views 200 --size 640x480 --noise realistic --seed 0 \
    --workers 16 > /tmp/make_scene.log 2>&1
mkdir -p /tmp/r3
setsid bash -c "python3 train.py -s $S -m /tmp/r3/unic -r 2 --test_iterations 30000 --save_iterations 15000 30000 > /tmp/r3/unic.log 2>&1 && python3 render.py -m /tmp/r3/unic --skip_train --labels --quiet >> /tmp/r3/unic.log 2>&1 && python3 metrics.py -m /tmp/r3/unic >> /tmp/r3/unic.log 2>&1; touch /tmp/r3/DONE" < /dev/null > /dev/null 2>&1 &
sleep 60; tr '\r' '\n' < /tmp/r3/unic.log | grep Training | tail -1
