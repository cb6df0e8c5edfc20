#!/bin/bash
# Continues the CPU domain-shift benchmark (20,000 iterations) from the models committed under
# runs/domain_shift_seed*/nnUNet_results/: finished ones are reused, a checkpoint_latest.pth is continued
# (nnUNetv2_train --c), two models train at once with one thread each. The stages, in order of value:
#   1. seeds 0-2 of ERM, DA5 and DropGen (issue 14's three-seed verdict, reported as soon as they are done),
#      then featuresOnly's seeds beside them;
#   2. the DropGen authors' behaviours bnBatch, unitImage, voxelNorm at the same length (issue 15's defaults);
#   3. noDropout and DropGen DA5, seeds 0-2, then the few-shot arms (2 cases), seeds 0-2 (issue 14's other arms);
#   4. CT to MR, seed 0 (issue 15).
# Each stage writes its report; a stopped run continues where it stopped when this script is started again.
# W: the benchmark's --workdir; PY: a python with this package's dependencies. Run it from a checkout (better: a
# git worktree of it, so that edits do not reach running code); stop it at checkpoints with
# runs/stop_at_checkpoints.sh, and copy what it trained into runs/ with runs/collect.sh.
set -eu
cd "$(dirname "$0")/../.."
W=${W:-/work/bench}
PY=${PY:-python}
mkdir -p "$W/nnUNet_results"
for results in benchmarks/runs/domain_shift_seed*/nnUNet_results/*; do cp -rn "$results" "$W/nnUNet_results/"; done
export PYTHONPATH=.
common="--workdir $W --schedule 80epochs --choose-p 0.75 --disable-tta --save-every 5 --parallel 2"
stage() {  # $1: report name; the rest: bench_domain_shift.py arguments
  local name=$1
  shift
  $PY benchmarks/bench_domain_shift.py $common "$@" --report "$W/report_80epochs_$name.md" \
    > "$W/run_80epochs_$name.log" 2>&1
}
stage seeds012_ERM_DA5_DropGen --few-shot 0 --seeds 0 1 2 --arms DA5 DropGen
stage seeds012 --few-shot 0 --seeds 0 1 2 --arms DA5 DropGen featuresOnly
stage options --few-shot 0 --seeds 0 --arms DropGen --option-arms --options bnBatch unitImage voxelNorm
stage all_arms --few-shot 0 --seeds 0 1 2 --arms DA5 DropGen featuresOnly noDropout "DropGen DA5"
stage few_shot --few-shot 2 --seeds 0 1 2 --arms DA5 DropGen featuresOnly noDropout "DropGen DA5"
stage cross_modality --few-shot 0 --seeds 0 --arms DropGen --cross-modality
