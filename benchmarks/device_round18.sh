# Sessions 14 and 15 (`device` tool, carry .whl/), from the repository root. Two stages, one `run` call each:
#   bash benchmarks/device_round18.sh A            build; GPU tests while the bench scene is made; starts the chain
#                                                  and waits in the call until A_WAIT (540) seconds
#   WAIT=540 bash benchmarks/device_round18.sh poll   wait (repeat until it prints "chain done"), pack into $OUT
# The chain, alone on the GPU first, then side by side:
# 1. issue 10 (SPEED=1), a speed matrix at SPEED_ITERS (4000) on the bench scene, one run at a time:
#    SPEED_VARIANTS (default: plain, UniC-Lift and --feature_backward fused; session 14 timed --seg_scale, 16 the
#    vote head, 17 two side streams, since dropped: RESULTS 17a, 19a, 20a).
#    SPEED=0 leaves it out.
# 2. issue 13, the tables of device_tables.sh (TABLES, default "tab4 tab6" at ITERS 10k, SEEDS "0 1", JOBS 2
#    runs side by side: more add no throughput, RESULTS 17c; captions must say 10k). About 2 minutes of GPU per
#    run with its evaluation; TABLE_ARGS="--variants ..." runs some rows only.
# Session 15 ran Tab. 4 (one seed, RESULTS 18); session 16 the vote head's speed and Tab. 6 (RESULTS 19).
# Session 17 ran PROFILE=1 SEEDS=0 TABLES=fig9 (RESULTS 20a-b), then SPEED=0 GPU_TESTS=0 TABLES=fig8 (20c).
# Session 18's plan: SPEED=0 SEEDS=1 TABLES="fig9 tab2" bash benchmarks/device_round18.sh A: the GPU tests, Fig. 9
# with both series (every view equally, and --mask_view_share 0.5: RESULTS 20d), seed 1 (seed 0's first series is in
# 20b; about 11 minutes for 7 runs), then Tab. 2 (480x360 unless SIZE and VIEWS say otherwise; captions say so).
# Session 18 ran PROFILE=1 SEEDS=1 TABLES="fig9 tab2" (the speed matrix after the tile kernel wrote into the colour
# gradient in place; profile_step --stacks names the lines behind each GPU operator).
# Session 19's plan: PROFILE=1 SEEDS="1" TABLES="tab2" TABLE_ARGS="--variants contrastive_lift" bash ... A (GPU tests,
# the fused backward's among them; bench_ops.py: row gathers and channel packing, about 10 s; the profile with
# Python stacks, plain / UniC-Lift / --feature_backward fused; the speed matrix of the same three after gather_rows;
# then Tab. 2's missing baseline run), then seed 0 of Tab. 2 or Tab. 5 alone on the GPU.
# Session 19 ran it (RESULTS 22; the machine went back between A and the poll, and Tab. 2 ran again on a bare one).
# Session 20's plan: PROFILE=1 SPEED_SEEDS="0 1" STEP_OPS_AB=1 TABLES="" bash benchmarks/device_round18.sh A: the GPU
# tests (the step kernels' among them: tests/test_step_ops.py), bench_ops, the profile, the speed matrix with two
# runs per variant (the fused backward's bench and profile disagreed in 22a), and UniC-Lift (and fused) with the
# step kernels on (UNIC_LIFT_STEP_OPS=1, into R/speed_on) for their A/B; the profile runs with them on
# (PROFILE_STEP_OPS=0: off). If their GPU tests pass, STEP_OPS_DEFAULT becomes "1". Then PQ^scene at 100 objects,
# or Tab. 5.
# Session 20 ran it (RESULTS 23a: the step kernels' tests passed but the render's packing kernel, which lost to
# torch.cat, was dropped; STEP_OPS_DEFAULT became "1"). Then: OBJ=100 STEP_OPS_AB=0 PROFILE=1 SPEED_SEEDS="0 1"
# TABLES="" bash ... A: the GPU tests, the profile and speed matrix of plain and UniC-Lift at the new default, and
# UniC-Lift at 10k iterations on a 100-object room of layout seed 5 (made beside the bench scene).
# Session 21's plan (issue 13): SPEED=0 TABLES=tab5 SEEDS=0 bash ... A (about 21 GPU minutes), or Tab. 1 in parts,
# e.g. SPEED=0 TABLES=tab1 SEEDS=0 TABLE_ARGS="--objects 25 50" (each part's runs_json.tgz unpacked with
# tar xzf runs_json.tgz -C benchmarks/paper_runs and committed, JSON only; then paper_tables.py tab1 --collect
# --runs benchmarks/paper_runs/runs --size 480x360 --views 186 draws the whole).
# Session 21 ran SPEED=0 TABLES=tab5 SEEDS=0 (the GPU tests and scene 2; the machine was taken back during scene 3),
# then GPU_TESTS=0 OPS=0 ... TABLE_ARGS="--scene_seeds 3" on a fresh one (RESULTS 24).
# Session 22's plan (about 25 GPU minutes): GPU_TESTS=0 SPEED=0 SEEDS=0 TABLES="tab5 tab1" \
#   TABLE_ARGS_tab5="--scene_seeds 4" TABLE_ARGS_tab1="--objects 25" bash ... A, then poll; unpack runs_json.tgz into
# benchmarks/paper_runs (JSON only: train_stats, results, extraction) and --collect each table from there.
# TABLE_ARGS_<table> gives one table its own arguments (else TABLE_ARGS).
# Session 22 ran that plan (RESULTS 25a-b: Tab. 5 complete, Tab. 1 at 25 objects), then --seg_interval 2 once by hand:
# 2.4x slower than the default on CUDA (25c). Session 23's plan: PROFILE=1 PROFILE_VARIANTS="unic unic:--seg_interval 2"
#   GPU_TESTS=0 SPEED=0 SEEDS=0 TABLES=tab1 TABLE_ARGS_tab1="--objects 50" bash ... A (the profile names what the
#   colour-only steps spend; then Tab. 1's 50-object rows, about 14 GPU minutes), then poll; --objects 100, 500 later.
#   The baseline's tuning now fits its candidates side by side (RESULTS 25d): read its tuning seconds against 25b's
#   98-109 s, and its kept fit's seconds against 25b's 14-24 s (contention with the other workers would show there).
# Session 23 ran that plan with GPU_TESTS=1 (RESULTS 26: the GPU tests passed; the profile put --seg_interval 2's loss
#   inside densification; tuning 7-10 s), then GPU_TESTS=0 OPS=0 ... TABLE_ARGS_tab1="--objects 100" on the same machine.
# Session 24's plan: PROFILE=1 PROFILE_VARIANTS="unic unic:--seg_interval 2 unic:--seg_interval 2 --loss_graph off"
#   PROFILE_ARGS="--densify_until 6000 --warmup 2000" GPU_TESTS=0 SPEED=0 SEEDS=0 TABLES=tab1
#   TABLE_ARGS_tab1="--objects 500" bash ... A, then poll: the profile inside densification (refinement steps
#   included; the third variant tells the loss stage's CUDA graphs from the rest), then Tab. 1's 500-object rows
#   (about 13 GPU minutes).
# Session 24 ran that plan (RESULTS 27: the profile came back; the chain was lost when the poll came late), then
#   PROFILE=0 OPS=0 GPU_TESTS=0 ... TABLE_ARGS_tab1="--objects 500" A on a fresh machine with .prebuilt carried (ready
#   in 1 s), one poll, and the GPU tests on the carried library (all passed). Tab. 1 is complete.
# Session 25's plan (issue 10), carry [".whl", ".prebuilt"]: SPEED=1 SPEED_ITERS=30000 SPEED_VARIANTS="plain unic
#   unic:--seg_interval 2" PROFILE=0 OPS=0 GPU_TESTS=0 TABLES="" bash ... A, then poll: whole 30k runs on the bench
#   scene, each alone (about 8 GPU minutes; the issue's 30k reference numbers were last taken in session 16;
#   speed_logs.tgz brings their train_log.jsonl back), to see whether 25c's 2.4x repeats and, from train_log.jsonl
#   (seconds every 100 iterations), in which iterations; the profiles (26b, 27b) predict no slowdown. Then second
#   seeds of Tab. 1's rows whose gaps exceed the seed noise: SEEDS=1 TABLES=tab1 TABLE_ARGS_tab1="--objects 50 100".
# Session 25 ran that plan; the machine went back in the gap after A (result transfer + reply > 30 s), so it then ran
#   A_WAIT=583 SPEED_ARGS=--no_eval SPEED_VARIANTS="unic:--feature_backward fused unic" ... A as ONE call (RESULTS 28:
#   whole 30k runs, the fused backward 6 % faster and now auto's choice). **Plan every chain to fit in one call**
#   (A_WAIT up to ~585 with timeout_s 600; what is finished comes back); a poll after A is a gamble.
# Session 26's plan (issue 10), carry [".whl", ".prebuilt"], each line one call of its own:
#   (feature_bwd.cu gained unic_fused_bwd_fits after the last archive: the project's library builds again, seconds.)
#   1. GPU_TESTS=1 PROFILE=1 PROFILE_VARIANTS="plain unic unic:--feature_backward tile_sparse" PROFILE_ARGS="--densify_until
#      15000 --warmup 15100" SPEED=0 OPS=0 TABLES="" A_WAIT=585 bash ... A (about 8 minutes): the GPU tests (auto now
#      takes the fused kernel: test_feature_backward's test_auto_takes_the_fused_kernel_where_it_builds), and the kernel
#      table at 1.24 M Gaussians, the size where 28a's whole runs spend most of their time (23a's profile was at 528k):
#      what the 2.98 ms UniC-Lift adds there is made of, and the fused kernel's time against gsplat's backward plus the
#      tile kernel's. Then, if device time is left, the same three at PROFILE_ARGS="--densify_until 600 --warmup 700"
#      (about 144k Gaussians), where 28a saw the fused kernel 6 % slower (the occupancy hypothesis of 28a).
#   2. SPEED_ITERS=30000 SPEED_ARGS=--no_eval SPEED_VARIANTS="plain unic" SPEED_EXTRA="--densify_until_iter 1200"
#      PROFILE=0 OPS=0 GPU_TESTS=0 TABLES="" A_WAIT=585 bash ... A: a proxy for the issue's own scene size (about 250k
#      Gaussians at the end; ours end at 1.24 M; 28a's logs: 258k at 1100, 286k at 1200), all losses on from 1200 (the
#      triplet and L_3D start when densification stops), 30k iterations, timing only (SPEED_EXTRA: train.py flags for
#      every variant, after bench_train's --).
# Session 26 had 180 s of device time (less than a machine's start): nothing above ran. It built --feature_layout
#   packed (RESULTS 29; tested on the CPU, bit for bit against the separate layout), which the next lease times:
# Session 27's plan (issue 10), carry [".whl", ".prebuilt"], each line one call of its own:
#   1. GPU_TESTS=1 PROFILE=1 PROFILE_VARIANTS="plain unic unic:--feature_layout packed" PROFILE_ARGS="--densify_until
#      15000 --warmup 15100" SPEED=0 OPS=1 TABLES="" A_WAIT=585 bash ... A: the GPU tests (new since the last lease: the
#      fused kernel as auto's choice, the packed render and training, L_3D's kernel on a column block), bench_ops (its
#      new rows: both layouts' colour input and backward into .grad, with and without L_3D, at 528k and 1.24 M), then
#      the kernel table at 1.24 M Gaussians: the concatenation and gradient copies the packed layout removes, measured.
#   2. SPEED_ITERS=30000 SPEED_ARGS=--no_eval SPEED_VARIANTS="unic:--feature_layout packed plain" PROFILE=0 OPS=0
#      GPU_TESTS=0 TABLES="" A_WAIT=585 bash ... A: the packed layout's whole run against 28a's 262.7 s (the default
#      layout's), plain for this machine's baseline. If it wins, auto takes packed (train.py _feature_layout).
#   3. Session 26's line 2 (the proxy for the issue's scene size), with the winning layout.
# Session 27 ran lines 1-3 (RESULTS 30a-b: packed 3.7 % faster over the whole bench run, now auto's choice; at the
#   issue's size 136 s, plain 97 s, 1.39x), then PROFILE=1 PROFILE_VARIANTS="plain unic" PROFILE_ARGS="--densify_until
#   1200 --warmup 1300" SPEED=0 OPS=0 GPU_TESTS=0 on a second machine with the bench scene carried in .scene/ (30c: both
#   steps bound by the host; profile_step's ratio 1.83x against the run's 1.39x, plain's step differing most).
# Session 28's plan (issue 10), carry [".whl", ".prebuilt", ".scene"] (.scene/bench: make it here first with
#   bench_scene's make_scene.py command, --workers 2, about 4 minutes; bench_scene copies it), each line one call.
#   Session 27 also built, after its lease, four defaults (fused Adam calls merged by hyperparameters, the padded
#   background kept, the fused backward's gradients in one buffer, the loss stage taking the render's image whole)
#   and two opt-in candidates for the host-bound step
#   (RESULTS 30d): --l3d_grad kernel and --optimizer_graph on. C="unic:--l3d_grad kernel --optimizer_graph on".
#   1. GPU_TESTS=1 PROFILE=1 PROFILE_VARIANTS="plain unic $C" PROFILE_ARGS="--densify_until 1200 --warmup 1300" SPEED=0
#      OPS=0 TABLES="" A_WAIT=585 bash ... A: the GPU tests (new: every trainer packs its features by default; the
#      two candidates' tests in test_step_ops, test_optim and test_train), then the profile at the issue's size with
#      its new "train.py loop" column (the phase events' cost). A candidate whose tests fail stays off.
#   2. SPEED=1 SPEED_ITERS=30000 SPEED_ARGS="--no_eval --no_phases" SPEED_VARIANTS="plain unic $C" SPEED_EXTRA=
#      "--densify_until_iter 1200" GPU_TESTS=0 PROFILE=0 OPS=0 TABLES="" A_WAIT=585 bash ... A: the time a user's run
#      takes at the issue's size, one after the other (about 6 minutes). A candidate that wins becomes auto's choice.
#   3. The same with SPEED_SEEDS=1: the noise. 4. Whatever is left: the default at 30k with evaluation on the bench
#      scene (SPEED_ARGS="" SPEED_VARIANTS=unic), the issue's quality check (against 10a's 91.02 PQ^scene, 33.79 dB).
# Session 28 ran line 1 on tree 329a450 (the GPU tests failed: 30d's loss stage shadowed nn.Module.buffers(); fixed
#   in d511c6e), line 1 again (all passed), lines 2 and 3 (RESULTS 31b: the default 1.44-1.46x plain, 7-9 % noise
#   between runs; AdamGraph replayed 10-15 % of the steps, fixed in e3f932c), then on a third machine GPU_TESTS=1
#   PROFILE=1 PROFILE_STACKS=0 with the variants alternated, each twice (31c: up to 17 % between repeats a minute
#   apart; the graph saves 0.06-0.11 ms of host per step; both candidates stay opt-in).
# Session 29's plan (issue 10), carry [".whl", ".prebuilt", ".scene"] (.scene/bench: bench_scene's make_scene.py
#   command, --workers 2, about 35 s here), each line one call:
#   1. GPU_TESTS=1 first, always, after any change to GPU code (31a: a landed submission is not a tested one).
#   2. Whole runs at the issue's size alternated, so that the noise is measured, not guessed: SPEED_VARIANTS="plain
#      unic" SPEED_SEEDS="0 1" (bench_train runs seed by seed: plain, unic, plain, unic; about 430 s) with
#      SPEED_ARGS="--no_eval --no_phases" SPEED_EXTRA="--densify_until_iter 1200"; a change is claimed only where
#      its runs beat the default's on both seeds by more than the two seeds' spread.
# Since session 23 a stage A on a bare machine also writes $OUT/prebuilt.tar.xz (gsplat's extension and the project's
#   nvcc libraries, benchmarks/device_prebuilt.py): copy it to .prebuilt/ here and carry [".whl", ".prebuilt"], and the
#   next machine with the same torch skips the ~70 s build. The first lease that uses it runs GPU_TESTS=1 (the tests
#   then run on the carried library, which no GPU has loaded through the shim yet).
# Stage A now makes the tables' scenes (paper_tables.py --scenes_only, 4 at a time) beside the GPU tests.
# Call poll at once after A (within 30 s: read its output after starting the poll, not before): a machine idle for 30 s is given back with the chain on it (poll then exits 3 at once).
# Never `pkill -f` a pattern that appears in the run's own command line (it kills the run).
set -u
W=/tmp/w; R=/tmp/r18; D=/tmp/data
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
SPEED_ITERS=${SPEED_ITERS:-4000}
SPEED_VARIANTS=${SPEED_VARIANTS:-"plain unic"}
stage=${1:-A}
source benchmarks/device_jobs.sh  # fresh_tree, bench_scene, gpu_tests, tables_chain, pack_tables

# speed_logs: the speed runs' train_log.jsonl (seconds and Gaussians every 100 iterations) as $OUT/speed_logs.tgz,
# to see which iterations of a run were slow (RESULTS 27b left 25c's 2.4x to a whole timed run).
speed_logs() {
  local logs; logs=$(cd $R 2>/dev/null && find speed speed_on obj -name train_log.jsonl 2>/dev/null)
  [ -n "$logs" ] && (cd $R && tar czf $OUT/speed_logs.tgz $logs)
  return 0
}

# variant_args "plain unic unic:--flag value": the caller's local array args, one element per variant (a variant
# starts at each plain / unic, so its flags may hold spaces).
variant_args() {
  args=()
  IFS='|' read -ra specs <<< "$(echo "$1" | sed 's/ \(plain\|unic\)/|\1/g')"
  for v in "${specs[@]}"; do args+=("$v"); done
}

speed_matrix() {
  local args; variant_args "$SPEED_VARIANTS"
  python3 benchmarks/bench_train.py --scene $D/bench --out $R/speed --iterations $SPEED_ITERS --seeds ${SPEED_SEEDS:-0} \
    ${SPEED_ARGS:-} --variants "${args[@]}" ${SPEED_EXTRA:+-- $SPEED_EXTRA} > $R/speed.log 2>&1
  if [ "${STEP_OPS_AB:-0}" = 1 ]; then  # UniC-Lift with the step kernels on (off by default until tested), same seeds
    UNIC_LIFT_STEP_OPS=1 python3 benchmarks/bench_train.py --scene $D/bench --out $R/speed_on \
      --iterations $SPEED_ITERS --seeds ${SPEED_SEEDS:-0} --variants unic "unic:--feature_backward fused" \
      > $R/speed_on.log 2>&1
  fi
  touch $R/speed.DONE
}

# profile_step (PROFILE=1): wall against host time and the kernels by GPU time, plain and UniC-Lift, after
# densification on the bench scene (about a minute each): is the step bound by the host or by the GPU?
profile_run() {
  local args; variant_args "$PROFILE_VARIANTS"
  UNIC_LIFT_STEP_OPS=${PROFILE_STEP_OPS:-1} python3 benchmarks/profile_step.py -s $D/bench --out $R/profile ${PROFILE_ARGS:-} --variants "${args[@]}" \
    $([ "${PROFILE_STACKS:-1}" = 1 ] && echo --stacks) > $R/profile.log 2>&1
  touch $R/profile.DONE
}

chain18() {
  cd $W; export PYTHONPATH=/tmp/site:$W PYTHONUNBUFFERED=1
  [ "${OPS:-1}" = 1 ] && python3 benchmarks/bench_ops.py --out $R/ops.md > $R/ops.log 2>&1  # about 10 s
  [ "${PROFILE:-0}" = 1 ] && profile_run
  [ "${SPEED:-1}" = 1 ] && speed_matrix
  if [ -n "${OBJ:-}" ]; then  # PQ^scene on a room of OBJ objects (layout seed OBJ_SEED), UniC-Lift at OBJ_ITERS
    python3 benchmarks/bench_train.py --scene $D/obj$OBJ --out $R/obj --iterations ${OBJ_ITERS:-10000} --seeds 0 \
      --variants unic > $R/obj.log 2>&1; touch $R/obj.DONE
  fi
  tables_chain
  touch $R/chain.DONE
}

if [ "$stage" = A ]; then
  fresh_tree || exit 1
  if [ "${SPEED:-1}" = 1 ] || [ "${PROFILE:-0}" = 1 ]; then bench_scene 8 & fi
  # the tables' scenes too, 4 at a time on the 16 cores, while the GPU tests run (SCENE_WORKERS processes each: 7 for
  # a table of two scenes, e.g. one object count of Tab. 1)
  for t in ${TABLES-tab4 tab6}; do
    python3 benchmarks/paper_tables.py $t --scenes_only --scenes_dir $D/paper --size ${SIZE:-480x360} \
      --views ${VIEWS:-186} --workers ${SCENE_WORKERS:-4} --scene_jobs 4 $(table_args $t) > $R/scenes_$t.log 2>&1 &
  done
  if [ -n "${OBJ:-}" ]; then  # the OBJ-object room on the CPU beside the bench scene
    python3 tools/make_scene.py --out $D/obj$OBJ --objects $OBJ --views 186 --size 480x360 --noise realistic \
      --seed ${OBJ_SEED:-5} --format panopli --workers 6 --quiet > $R/make_obj.log 2>&1 &
  fi
  [ "${GPU_TESTS:-1}" = 1 ] && gpu_tests  # on the GPU while the scene is made on the CPU
  wait; echo "scene ready at ${SECONDS}s"
  setsid bash -c "$(declare -f chain18 variant_args speed_matrix profile_run tables_chain table_args); R=$R W=$W D=$D SPEED='${SPEED:-1}' \
    PROFILE='${PROFILE:-0}' OPS='${OPS:-1}' SPEED_SEEDS='${SPEED_SEEDS:-0}' STEP_OPS_AB='${STEP_OPS_AB:-0}' PROFILE_STEP_OPS='${PROFILE_STEP_OPS:-1}' PROFILE_STACKS='${PROFILE_STACKS:-1}' \
    PROFILE_VARIANTS='${PROFILE_VARIANTS:-plain unic}' PROFILE_ARGS='${PROFILE_ARGS:-}' OBJ='${OBJ:-}' OBJ_ITERS='${OBJ_ITERS:-10000}' \
    SPEED_ITERS=$SPEED_ITERS SPEED_VARIANTS='$SPEED_VARIANTS' SPEED_ARGS='${SPEED_ARGS:-}' SPEED_EXTRA='${SPEED_EXTRA:-}' TABLES='${TABLES-tab4 tab6}' SEEDS='${SEEDS:-0 1}' \
    ITERS=${ITERS:-10000} JOBS=${JOBS:-2} SIZE=${SIZE:-480x360} VIEWS=${VIEWS:-186} GPUS='${GPUS:-0}' \
    TABLE_ARGS='${TABLE_ARGS:-}'; chain18" < /dev/null > $R/chain.log 2>&1 &
  # Stay in this call until A_WAIT seconds (default 540) have passed: fewer gaps between calls, and a gap over
  # 30 s gives the machine, and the chain on it, back (session 15 lost a chain so).
  while [ ! -f $R/chain.DONE ] && [ $SECONDS -lt ${A_WAIT:-540} ]; do sleep 5; done
  cp $R/gpu_tests.log $OUT/ 2>/dev/null; tail -n 3 $R/speed.log $R/*.log 2>/dev/null | tail -n 20
  # Bring back what is finished: session 16 lost a finished speed matrix when the gap after A gave the machine back.
  cp $R/speed/bench.md $OUT/speed.md 2>/dev/null; cp $R/speed/bench.json $OUT/speed.json 2>/dev/null
  cp $R/speed_on/bench.md $OUT/speed_on.md 2>/dev/null; cp $R/speed_on/bench.json $OUT/speed_on.json 2>/dev/null
  cp $R/profile/profile.md $OUT/ 2>/dev/null; cp $R/profile/profile.json $OUT/ 2>/dev/null
  cp $R/ops.md $OUT/ 2>/dev/null
  cp $R/obj/bench.md $OUT/obj.md 2>/dev/null; cp $R/obj/bench.json $OUT/obj.json 2>/dev/null
  speed_logs
  pack_tables
fi

if [ "$stage" = poll ]; then
  chain_alive
  while [ ! -f $R/chain.DONE ] && [ $SECONDS -lt ${WAIT:-540} ]; do sleep 5; done
  [ -f $R/chain.DONE ] && echo "chain done"
  grep -h "it/s" $R/speed.log 2>/dev/null | tail -5
  for t in ${TABLES-tab4 tab6}; do echo "== $t"; tail -n 3 $R/$t.log 2>/dev/null; done
  cp $R/speed/bench.md $OUT/speed.md 2>/dev/null; cp $R/speed/bench.json $OUT/speed.json 2>/dev/null
  cp $R/gpu_tests.log $OUT/ 2>/dev/null; cp $R/ops.md $OUT/ 2>/dev/null
  cp $R/speed_on/bench.md $OUT/speed_on.md 2>/dev/null; cp $R/speed_on/bench.json $OUT/speed_on.json 2>/dev/null
  cp $R/profile/profile.md $OUT/ 2>/dev/null; cp $R/profile/profile.json $OUT/ 2>/dev/null
  cp $R/obj/bench.md $OUT/obj.md 2>/dev/null; cp $R/obj/bench.json $OUT/obj.json 2>/dev/null
  speed_logs
  pack_tables
  tar czf $OUT/r18.tgz -C $R --exclude='runs' --exclude='*.ply' --exclude='*.pt' --exclude='renders' --exclude='gt' \
    --exclude='overlay' --exclude='pred_*' --exclude='point_cloud' speed $(cd $R && ls *.log 2>/dev/null) 2>/dev/null
  ls -la $OUT
fi
