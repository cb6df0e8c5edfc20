#!/bin/bash
# As run on 2026-12-01: /work/snap2 was a git worktree of this repository (removed since), /work/bench the
# benchmark's --workdir; on another machine use a checkout and copy runs/*/nnUNet_results into the workdir.
# seed 1 at 80 epochs, two models side by side with one thread each. Measured here: ERM alone with two threads
# 56 s per epoch, ERM next to DropGen 80 s, DropGen next to ERM 130 s: side by side does more per hour.
cd /work/snap2
PY=/work/main/.venv/bin/python
common="--workdir /work/bench --schedule 80epochs --seeds 0 1 --choose-p 0.75 --few-shot 0 --parallel 2 --disable-tta"
echo "=== $(date -u) ERM (continued from its epoch-10 checkpoint) + DropGen, side by side"
PYTHONPATH=/work/snap2 $PY benchmarks/bench_domain_shift.py $common --arms DropGen --report /work/bench/report_80epochs_seeds01_ERM_DropGen.md
echo "=== $(date -u) done"
