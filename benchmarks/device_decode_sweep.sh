#!/usr/bin/env bash
# Issue 9, decoding rule: oracle sweep on one generated instance-only Messy-Rooms scene (no
# detic_semantic/: the fg/bg head is learnt from the instance masks). Generates the scene, trains the
# full schedule with every default, renders + scores the test views, then benchmarks/decode_sweep.py
# (plain, segments N, gaussians K, 0.2 %) from the same model; all in the background (setsid).
#   SWEEP_OBJECTS=100 bash benchmarks/device_decode_sweep.sh      # 25 (default), 100, 500
#   SWEEP_KEEP_SEM=1 ...   keep detic_semantic/ (the segmenter's fg/bg) instead
# Poll: tail -3 /tmp/ds/messy$SWEEP_OBJECTS/run.log; the table lands in /tmp/ds/messy$N/decode_sweep.md
# and $OUT/decode_sweep_messy$N.{md,json}.
source benchmarks/device_env.sh || exit 1
OBJ=${SWEEP_OBJECTS:-25}; RES=${SWEEP_R:-2}
S=/tmp/data/inst_messy${OBJ}
if [ ! -d $S ]; then
    python3 tools/make_scene.py --out $S --objects $OBJ --views 200 --size 640x480 --noise realistic \
        --seed 0 --format messy --workers 16 > /tmp/make_scene_$OBJ.log 2>&1 || { tail -3 /tmp/make_scene_$OBJ.log; exit 1; }
    [ -n "$SWEEP_KEEP_SEM" ] || rm -rf $S/detic_semantic $S/detic_probabilities
fi
M=/tmp/ds/messy${OBJ}
mkdir -p $M
setsid bash -c "python3 train.py -s $S -m $M -r $RES --test_iterations 30000 > $M/run.log 2>&1 && \
python3 render.py -m $M --skip_train --labels --quiet >> $M/run.log 2>&1 && \
python3 metrics.py -m $M >> $M/run.log 2>&1 && \
python3 benchmarks/decode_sweep.py -m $M --shares 0.5 --min_pixels 16 64 --json $M/decode_sweep.json \
    > $M/decode_sweep.md 2>> $M/run.log; \
cp $M/decode_sweep.md $OUT/decode_sweep_messy$OBJ.md; cp $M/decode_sweep.json $OUT/decode_sweep_messy$OBJ.json; \
cp $M/train_stats.json $OUT/train_stats_messy$OBJ.json; touch $M/DONE" < /dev/null > /dev/null 2>&1 &
sleep 60; tr '\r' '\n' < $M/run.log | grep -a 'Training\|rror' | tail -1
