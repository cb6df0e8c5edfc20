#!/bin/bash
# Where 2026-12-02 stopped: seed 1's featuresOnly at its epoch-60 checkpoint, seed 2's ERM at its epoch-15
# checkpoint (both checkpoint_latest.pth, committed under runs/*/nnUNet_results/). This continues both side by
# side, one thread each; the benchmark passes nnUNetv2_train --c itself. Run from a checkout (or a git worktree
# of it, so that edits to the checkout do not reach the running code); W is the benchmark's --workdir.
set -eu
W=${W:-/work/bench}
PY=${PY:-python}
mkdir -p "$W/nnUNet_results"
for seed in runs/domain_shift_seed*/nnUNet_results/*; do cp -rn "$seed" "$W/nnUNet_results/"; done 2>/dev/null || true
common="--workdir $W --schedule 80epochs --choose-p 0.75 --few-shot 0 --disable-tta"
export PYTHONPATH=. DROPGEN_BENCH_THREADS=1 OMP_NUM_THREADS=1
$PY benchmarks/bench_domain_shift.py $common --seeds 0 1 --arms DA5 DropGen featuresOnly \
  --report "$W/report_80epochs_seeds01.md" > "$W/run_seed1_featuresOnly.log" 2>&1 &
$PY benchmarks/bench_domain_shift.py $common --seeds 0 2 --arms ERM --save-every 5 \
  --report "$W/report_80epochs_seed2_ERM.md" > "$W/run_seed2_ERM.log" 2>&1 &
wait
