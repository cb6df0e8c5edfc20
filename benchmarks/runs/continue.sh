#!/bin/bash
# Continues the CPU domain-shift benchmark (20,000 iterations) from the models committed under
# runs/domain_shift_seed*/nnUNet_results/: finished ones are reused, a checkpoint_latest.pth is continued
# (nnUNetv2_train --c). Two lanes run at once, one model each with one torch thread (a lane trains its seeds in
# turn, so one process with --parallel 2 would leave a core idle whenever a seed has one model left). In order of
# value:
#   lane a: seed 2's featuresOnly (issue 14's featuresOnly targets over three seeds); the DropGen authors'
#           behaviours bnBatch, unitImage, voxelNorm at the same length (issue 15's defaults); noDropout, seeds
#           0-2; the few-shot arms (2 cases), seeds 0-2;
#   lane b: DropGen combined with DA5 on seed 0 (does the combination keep DA5's gains and DropGen's?); CT to
#           MR, seed 0 (issue 15); then it shares lane a's noDropout and few-shot models; last, DropGen DA5 on
#           seeds 1 and 2 (an arm beyond issue 14's list, so after everything the issues ask for).
# Two runs sharing the --workdir never train one model twice (the benchmark locks each model; a lane that reaches
# a model the other is training trains its others first, then waits). Each stage writes its report; a stopped
# run continues where it stopped when this script is started again. Every epoch writes checkpoint_latest.pth
# (--save-every 1; a few MB, well under a second), so runs/stop_at_checkpoints.sh stops within one epoch.
# Usage: continue.sh [a|b] (default: both). W: the benchmark's --workdir; PY: a python with this package's
# dependencies. Run it from a checkout (better: a git worktree of it, so that edits do not reach running code);
# stop it at checkpoints with runs/stop_at_checkpoints.sh, and copy what it trained into runs/ with
# runs/collect.sh.
set -eu
cd "$(dirname "$0")/../.."
W=${W:-/work/bench}
PY=${PY:-python}
LANES=${1:-ab}
mkdir -p "$W/nnUNet_results"
for results in benchmarks/runs/domain_shift_seed*/nnUNet_results/*; do cp -rn "$results" "$W/nnUNet_results/"; done
export PYTHONPATH=. DROPGEN_BENCH_THREADS=1
common="--workdir $W --schedule 80epochs --choose-p 0.75 --disable-tta --save-every 1 --parallel 1"
stage() {  # $1: report name; the rest: bench_domain_shift.py arguments
  local name=$1
  shift
  $PY benchmarks/bench_domain_shift.py $common "$@" --report "$W/report_80epochs_$name.md" \
    > "$W/run_80epochs_$name.log" 2>&1
}
lane_a() {
  stage seeds012 --few-shot 0 --seeds 0 1 2 --arms DA5 DropGen featuresOnly
  stage options --few-shot 0 --seeds 0 --arms DropGen --option-arms --options bnBatch unitImage voxelNorm
  all_arms a
  few_shot a
}
# Stages both lanes run (each trains what the other does not hold and waits for the rest, so both reports end
# complete); $1, the lane, keeps their logs apart.
all_arms() { stage "all_arms_lane_$1" --few-shot 0 --seeds 0 1 2 --arms DA5 DropGen featuresOnly noDropout; }
few_shot() { stage "few_shot_lane_$1" --few-shot 2 --seeds 0 1 2 --arms DA5 DropGen featuresOnly noDropout; }
lane_b() {
  stage DropGen_DA5_seed0 --few-shot 0 --seeds 0 --arms DA5 DropGen "DropGen DA5"
  stage cross_modality --few-shot 0 --seeds 0 --arms DropGen --cross-modality
  all_arms b
  few_shot b
  stage DropGen_DA5 --few-shot 0 --seeds 0 1 2 --arms DA5 DropGen "DropGen DA5"
}
case $LANES in
  a) lane_a ;;
  b) lane_b ;;
  ab) lane_a & lane_b; wait ;;
  *) echo "usage: $0 [a|b]" >&2; exit 2 ;;
esac
