#!/usr/bin/env bash
# Progress of a background sweep (device_sweep.sh): the table so far, each run's last bar, and a
# tarball of the finished runs' small files in $OUT (what a recycled machine would otherwise lose).
OUT=${OUT:-/tmp/out}; D=${1:-/tmp/sweep}
export PYTHONPATH=/tmp/site:$PWD
python3 benchmarks/sweep_table.py $D | tee $OUT/table.md
for f in $D/*.log; do echo "$(basename $f): $(tr '\r' '\n' < $f | grep -a 'Training\|rror' | tail -1 | cut -c1-150)"; done
(cd $D && tar czf $OUT/sweep_small.tgz --exclude='*.ply' --exclude='*.png' --exclude='*.pth' --exclude='*.pt' . 2>/dev/null)
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader; uptime
