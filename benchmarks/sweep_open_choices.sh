#!/usr/bin/env bash
# Open choices of METHOD.md, measured side by side on one GPU (all runs concurrently, so their
# timings are not comparable; PQ^scene / mIoU / PSNR are). Usage on the device:
#   bash benchmarks/sweep_open_choices.sh SCENE OUTDIR [extra train args...]
SCENE=$1; OUTDIR=$2; shift 2
# SWEEP_ARGS overrides the shortened schedule; SWEEP_RUNS picks a subset of the runs below.
COMMON="${SWEEP_ARGS:--r 2 --iterations 10000 --densify_until_iter 5000 --test_iterations 10000 --save_iterations 10000} --quiet $*"
declare -A RUNS=(
  [default]=""
  [push_sqdist]="--push sqdist"
  [sigmoid_gaussian]="--sigmoid_where gaussian"
  [W_fixed]="--linear_layer fixed"
  [W_identity]="--linear_layer identity"
  [stuff_segment]="--stuff_id segment"
  [seg_geometry_grad]="--seg_geometry_grad"
  [emb_lr_0.0025]="--embedding_lr 0.0025"
  [emb_lr_0.02]="--embedding_lr 0.02"
  [cluster_only]="--no-use_triplet --no-use_3d"
  [contrastive_lift]="--method contrastive_lift"
)
mkdir -p "$OUTDIR"
for name in ${SWEEP_RUNS:-${!RUNS[@]}}; do
  ( python3 train.py -s "$SCENE" -m "$OUTDIR/$name" $COMMON ${RUNS[$name]} > "$OUTDIR/$name.log" 2>&1 &&
    python3 render.py -m "$OUTDIR/$name" --skip_train --labels --quiet >> "$OUTDIR/$name.log" 2>&1 &&
    python3 metrics.py -m "$OUTDIR/$name" --quiet >> "$OUTDIR/$name.log" 2>&1 ) &
done
wait
python3 - "$OUTDIR" <<'PY'
import json, os, sys
out = sys.argv[1]
rows = []
for name in sorted(os.listdir(out)):
    res = os.path.join(out, name, "results.json")
    if os.path.isfile(res):
        r = next(iter(json.load(open(res)).values()))
        st = json.load(open(os.path.join(out, name, "train_stats.json")))
        rows.append(f"| {name} | {r.get('PQ_scene', float('nan')):.1f} | {r.get('mIoU', float('nan')):.1f} | "
                    f"{r['PSNR']:.2f} | {st['num_gaussians']} | {st['train_seconds']:.0f} | {st.get('cluster_seconds', 0):.0f} |")
    elif os.path.isdir(os.path.join(out, name)):
        rows.append(f"| {name} | FAILED (see {name}.log) | | | | | |")
print("| run | PQ^scene | mIoU | PSNR | Gaussians | train s (concurrent) | cluster s |")
print("|---|---:|---:|---:|---:|---:|---:|")
print("\n".join(rows))
PY
