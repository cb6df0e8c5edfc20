#!/bin/bash
# Continues the CPU domain-shift benchmark (20,000 iterations) from the models committed under
# runs/domain_shift_seed*/nnUNet_results/: finished ones are reused, a checkpoint_latest.pth is continued
# (nnUNetv2_train --c), two models train at once with one thread each. Then the DropGen authors' behaviours at
# the same length (seed 0). W: the benchmark's --workdir; PY: a python with this package's dependencies.
# Run it from anywhere in a checkout (better: a git worktree of it, so that edits do not reach running code).
set -eu
cd "$(dirname "$0")/../.."
W=${W:-/work/bench}
PY=${PY:-python}
mkdir -p "$W/nnUNet_results"
for results in benchmarks/runs/domain_shift_seed*/nnUNet_results/*; do cp -rn "$results" "$W/nnUNet_results/"; done
export PYTHONPATH=.
common="--workdir $W --schedule 80epochs --choose-p 0.75 --few-shot 0 --disable-tta --save-every 5 --parallel 2"
$PY benchmarks/bench_domain_shift.py $common --seeds 0 1 2 --arms DA5 DropGen featuresOnly \
  --report "$W/report_80epochs_seeds012.md" > "$W/run_80epochs_seeds012.log" 2>&1
$PY benchmarks/bench_domain_shift.py $common --seeds 0 --arms DropGen --option-arms --options bnBatch unitImage voxelNorm \
  --report "$W/report_80epochs_options.md" > "$W/run_80epochs_options.log" 2>&1
