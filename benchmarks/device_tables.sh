# Issue 13 in one lease (`device` tool, carry .whl/), from the repository root: the paper's tables that fit,
# on a shortened schedule (the captions must say so), runs side by side on the one GPU.
#   bash benchmarks/device_tables.sh A                 build; starts the tables in the background
#   WAIT=540 bash benchmarks/device_tables.sh poll     wait, print each table, pack them into $OUT/tables.tgz
# Defaults: TABLES="tab4 tab6" (the losses' ablation, L_3D's start), SEEDS="0 1", ITERS=10000, JOBS=8 side by
# side, 480x360 scenes of 186 views: 20 runs, about 17 minutes (paper_tables.py --dry_run estimates them).
# fig9 (mask fraction) adds 8 runs; tab1 / tab2 / tab5 need the Contrastive-Lift baseline's clustering
# (scikit-learn on the GPU machine) and, for their times, runs alone: not in one lease.
# After the lease: copy each table folder's table.md into RESULTS.md and the figures into docs/.
# Never `pkill -f` a pattern that appears in the run's own command line (it kills the run).
set -u
W=/tmp/w; R=/tmp/rt; D=/tmp/data
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
TABLES=${TABLES:-"tab4 tab6"}
SEEDS=${SEEDS:-"0 1"}
ITERS=${ITERS:-10000}
JOBS=${JOBS:-8}
SIZE=${SIZE:-480x360}
VIEWS=${VIEWS:-186}
GPUS=${GPUS:-0}
stage=${1:-A}
source benchmarks/device_jobs.sh  # fresh_tree, tables_chain, pack_tables

if [ "$stage" = A ]; then
  if [ "${SKIP_BUILD:-0}" = 1 ]; then rm -rf $R; mkdir -p $W $R $D; cp -r . $W; else fresh_tree || exit 1; fi
  setsid bash -c "$(declare -f tables_chain); R=$R W=$W D=$D TABLES='$TABLES' SEEDS='$SEEDS' ITERS=$ITERS JOBS=$JOBS \
    SIZE=$SIZE VIEWS=$VIEWS GPUS='$GPUS' TABLE_ARGS='${TABLE_ARGS:-}'; tables_chain" < /dev/null > $R/chain.log 2>&1 &
  sleep ${FIRST_WAIT:-60}; tail -n 5 $R/*.log
fi

if [ "$stage" = poll ]; then
  chain_alive
  last=${TABLES##* }
  while [ ! -f $R/$last.DONE ] && [ $SECONDS -lt ${WAIT:-540} ]; do sleep 5; done
  for t in $TABLES; do echo "== $t"; tail -n 3 $R/$t.log 2>/dev/null; cat $R/paper/$t/table.md 2>/dev/null; done
  pack_tables
fi
