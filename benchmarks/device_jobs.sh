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
    python3 benchmarks/things_ab.py -m $M --json $M/things_ab.json
  } > $R/acc/$name.log 2>&1
  echo "exit $?" >> $R/acc/$name.log; touch $R/acc/$name.DONE
}

# fresh_tree: a copy of the sent tree in W (runs survive the next call's re-send), the carried wheels
# installed, gsplat built; R and D made. Run from the repository root.
fresh_tree() {
  rm -rf $W $R; mkdir -p $W $R $D; cp -r . $W; cd $W
  source benchmarks/device_env.sh || return 1
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
}

# bench_scene [WORKERS]: the speed benchmark's scene (PanopLi, 25 objects, 480x360, 186 views) in D/bench.
bench_scene() {
  [ -d $D/bench ] || python3 tools/make_scene.py --out $D/bench --objects 25 --views 186 --size 480x360 \
      --noise realistic --seed 0 --format panopli --workers ${1:-10} --quiet > $R/make_bench.log 2>&1
}
