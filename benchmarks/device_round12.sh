# Session 7, second lease (`device` tool, carry .whl/): which Gaussians are things (issue 9, extraction
# recall). One unseen Messy-Rooms scene (instance masks only, 25 objects), a shortened schedule
# (ITERS, default 10 000: the budget left), then benchmarks/things_ab.py on the model. One call:
#   bash benchmarks/device_round12.sh
set -u
W=/tmp/w; R=/tmp/r12; D=/tmp/data
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
ITERS=${ITERS:-10000}
source benchmarks/device_jobs.sh  # fresh_tree
fresh_tree || exit 1
[ -d $D/messy25 ] || python3 tools/make_scene.py --out $D/messy25 --objects 25 --views 186 --size 480x360 \
  --noise realistic --layout old_room --seed 61 --format messy --workers 12 --quiet > $R/make25.log 2>&1
echo "scene at ${SECONDS}s"
M=$R/m25
python3 train.py -s $D/messy25 -m $M --quiet --iterations $ITERS --save_iterations $ITERS --test_iterations -1 \
  > $R/train.log 2>&1; echo "train rc $? at ${SECONDS}s"; tr '\r' '\n' < $R/train.log | grep -E "it/s|scaled|Error" | tail -2
python3 benchmarks/things_ab.py -m $M --json $OUT/things_ab.json 2>&1 | tee $OUT/things_ab.md
echo "done at ${SECONDS}s"
cp $R/*.log $OUT/ 2>/dev/null
