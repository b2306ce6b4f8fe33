#!/usr/bin/env bash
# Round 2, as actually run: stop anything left from an earlier launch, then the headline UniC-Lift
# run (640x480, full 30k schedule) and, 45 s later, a reduced open-choice sweep (160x120, 5k
# iterations, 6 runs, one CPU thread each) on the same GPU.
pkill -f "sweep_open_choices" ; pkill -f "python3 train.py"; pkill -f "python3 render.py"; sleep 3
rm -rf /tmp/r2; mkdir -p /tmp/r2
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
S=/tmp/data/bench_room25
setsid bash -c "python3 train.py -s $S -m /tmp/r2/unic --checkpoint_iterations 15000 25000 --test_iterations 30000 --save_iterations 15000 30000 > /tmp/r2/unic.log 2>&1 && python3 render.py -m /tmp/r2/unic --skip_train --labels --quiet >> /tmp/r2/unic.log 2>&1 && python3 metrics.py -m /tmp/r2/unic >> /tmp/r2/unic.log 2>&1; touch /tmp/r2/UNIC_DONE" < /dev/null > /dev/null 2>&1 &
sleep 45
OMP_NUM_THREADS=1 SWEEP_RUNS="default push_sqdist sigmoid_gaussian W_identity stuff_segment cluster_only" \
SWEEP_ARGS="-r 4 --iterations 5000 --densify_until_iter 2500 --test_iterations 5000 --save_iterations 5000" \
  setsid bash -c "bash benchmarks/sweep_open_choices.sh $S /tmp/r2/sweep > /tmp/r2/sweep.md 2>&1; touch /tmp/r2/SWEEP_DONE" < /dev/null > /dev/null 2>&1 &
