#!/usr/bin/env bash
# Open choices of METHOD.md, measured side by side on one GPU, a few runs at a time.
#   bash benchmarks/sweep_open_choices.sh SCENE OUTDIR [extra train args...]
# Env: SWEEP_RUNS (names to run, default all), SWEEP_ARGS (schedule, default below),
#      SWEEP_PARALLEL (concurrent runs, default 4). Runs share the GPU, so their train seconds
#      are comparable only within one batch; PQ^scene / mIoU / PSNR are comparable throughout.
# Each finished run leaves OUTDIR/NAME/{results.json,train_stats.json} and OUTDIR/NAME.log;
# `python benchmarks/sweep_table.py OUTDIR` prints the table (also at any time mid-sweep).
SCENE=$1; OUTDIR=$2; shift 2
COMMON="${SWEEP_ARGS:--r 2 --iterations 8000 --densify_until_iter 4000 --position_lr_max_steps 8000 --test_iterations 8000 --save_iterations 8000} $*"
declare -A RUNS=(
  [default]=""
  [push_sqdist]="--push sqdist"
  [sigmoid_gaussian]="--sigmoid_where gaussian"
  [W_free]="--linear_layer free"
  [W_fixed]="--linear_layer fixed"
  [W_identity]="--linear_layer identity"
  [stuff_segment]="--stuff_id segment"
  [seg_geometry_grad]="--seg_geometry_grad"
  [joint_raster]="--seg_raster joint"
  [semantic_embed]="--semantic_head embed"
  [emb_lr_0.0025]="--embedding_lr 0.0025"
  [emb_lr_0.02]="--embedding_lr 0.02"
  [cluster_only]="--no-use_triplet --no-use_3d"
  [contrastive_lift]="--method contrastive_lift"
)
# SWEEP_SNAP_RUNS / SWEEP_SNAP_K: re-render those runs with --snap_min_gaussians K for each K and keep
# each pass's results as results_snapK.json (results.json stays the pass without the clean-up).
snap_passes() {
  local name=$1 m="$OUTDIR/$1" k
  [[ " ${SWEEP_SNAP_RUNS:-} " == *" $name "* ]] || return 0
  cp "$m/results.json" "$m/results_nosnap.json"
  for k in ${SWEEP_SNAP_K:-10}; do
    python3 render.py -m "$m" --skip_train --labels --quiet --snap_min_gaussians "$k" >> "$OUTDIR/$name.log" 2>&1 &&
    python3 metrics.py -m "$m" --quiet >> "$OUTDIR/$name.log" 2>&1 && cp "$m/results.json" "$m/results_snap$k.json"
  done
  cp "$m/results_nosnap.json" "$m/results.json"
}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
mkdir -p "$OUTDIR"
for name in ${SWEEP_RUNS:-${!RUNS[@]}}; do
  [ -n "${RUNS[$name]+x}" ] || { echo "unknown run $name" >&2; continue; }
  while [ "$(jobs -rp | wc -l)" -ge "${SWEEP_PARALLEL:-4}" ]; do wait -n; done
  ( python3 train.py -s "$SCENE" -m "$OUTDIR/$name" $COMMON ${RUNS[$name]} > "$OUTDIR/$name.log" 2>&1 &&
    python3 render.py -m "$OUTDIR/$name" --skip_train --labels --quiet --snap_min_gaussians 0 >> "$OUTDIR/$name.log" 2>&1 &&
    python3 metrics.py -m "$OUTDIR/$name" --quiet >> "$OUTDIR/$name.log" 2>&1 &&
    snap_passes "$name" ) &
done
wait
python3 benchmarks/sweep_table.py "$OUTDIR"
