#!/bin/bash
# As run on 2026-12-02: /work/snap2 a git worktree of this repository, /work/bench the benchmark's --workdir
# (runs/*/nnUNet_results copied into it); on another machine use a checkout and copy them the same way.
# Seed 1's DA5 and featuresOnly at 80 epochs, side by side with one thread each (ERM and DropGen of seeds 0
# and 1 are reused; DropGen is listed so that the report shows it). A stopped run continues with --c.
cd /work/snap2
PY=/work/main/.venv/bin/python
echo "=== $(date -u) DA5 + featuresOnly, side by side"
PYTHONPATH=/work/snap2 $PY benchmarks/bench_domain_shift.py --workdir /work/bench --schedule 80epochs \
  --seeds 0 1 --choose-p 0.75 --few-shot 0 --parallel 2 --disable-tta --arms DA5 DropGen featuresOnly \
  --report /work/bench/report_80epochs_seeds01.md
echo "=== $(date -u) done"
