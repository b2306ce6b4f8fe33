# Shared by the device_round scripts (source it): label jobs run on the GPU machine.
# acc_job NAME SCENE [train flags...]: train (ITERS iterations), decode sweep + dump, labels, metrics,
# extraction against the exact geometry (surface and box references). Needs R (results) and W (tree).
acc_job() {
  local name=$1 scene=$2; shift 2
  local M=$R/acc/$name
  mkdir -p $R/acc; cd $W
  { python3 train.py -s $scene -m $M --eval --quiet --test_iterations $ITERS --save_iterations $ITERS "$@" &&
    python3 benchmarks/decode_sweep.py -m $M --json $M/sweep.json --dump $R/acc/${name}_dump.npz --quiet
    python3 render.py -m $M --skip_train --labels --quiet && python3 metrics.py -m $M
    python3 tools/objects.py evaluate -m $M --json $M/extract_default.json
    python3 tools/objects.py evaluate -m $M --json $M/extract_box.json --reference box --quiet
  } > $R/acc/$name.log 2>&1
  echo "exit $?" >> $R/acc/$name.log; touch $R/acc/$name.DONE
}
