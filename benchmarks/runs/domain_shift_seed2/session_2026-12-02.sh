#!/bin/bash
# 2026-12-02 afternoon session driver: prepare datasets once (no race), then two lanes side by side.
set -u
W=/work/bench
PY=/work/main/.venv/bin/python
cd /work/snap
mkdir -p "$W/nnUNet_results"
for r in benchmarks/runs/domain_shift_seed*/nnUNet_results/*; do cp -rn "$r" "$W/nnUNet_results/"; done
export PYTHONPATH=. DROPGEN_BENCH_THREADS=1 OMP_NUM_THREADS=1
common="--workdir $W --schedule 80epochs --choose-p 0.75 --few-shot 0 --disable-tta --save-every 5"
echo "=== $(date -u) preparing datasets"
$PY - <<'PY'
import sys; sys.argv = ["bench", "--workdir", "/work/bench", "--schedule", "80epochs", "--device", "cpu"]
sys.path.insert(0, "benchmarks")
import bench_domain_shift as b
bench = b.Bench(b.parse_args())
for seed in (0, 1, 2):
    print(bench.dataset(620 + seed, seed), flush=True)
PY
echo "=== $(date -u) datasets ready"
lane_a() {
  $PY benchmarks/bench_domain_shift.py $common --seeds 0 1 --arms DA5 DropGen featuresOnly \
    --report "$W/report_80epochs_seeds01.md" > "$W/run_seed1_featuresOnly.log" 2>&1
  echo "=== $(date -u) lane A: seed 1 featuresOnly done"
  $PY benchmarks/bench_domain_shift.py $common --seeds 0 2 --arms DropGen featuresOnly \
    --report "$W/report_80epochs_seed2_DropGen.md" > "$W/run_seed2_DropGen.log" 2>&1
  echo "=== $(date -u) lane A: seed 2 DropGen/featuresOnly done"
}
lane_b() {
  $PY benchmarks/bench_domain_shift.py $common --seeds 0 2 --arms ERM \
    --report "$W/report_80epochs_seed2_ERM.md" > "$W/run_seed2_ERM.log" 2>&1
  echo "=== $(date -u) lane B: seed 2 ERM done"
  $PY benchmarks/bench_domain_shift.py $common --seeds 0 2 --arms DA5 \
    --report "$W/report_80epochs_seed2_DA5.md" > "$W/run_seed2_DA5.log" 2>&1
  echo "=== $(date -u) lane B: seed 2 DA5 done"
}
lane_a &
# lane A evaluates seed 0's committed models first; lane B would predict the same files at once
until grep -q "Seed 1: dataset" "$W/run_seed1_featuresOnly.log" 2>/dev/null; do sleep 15; done
lane_b &
wait
