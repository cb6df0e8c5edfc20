#!/bin/bash
# Seed 2's DropGen alone on one core (the benchmark would first train ERM, which the other lane trains).
cd /work/snap
export PYTHONPATH=. DROPGEN_BENCH_THREADS=1 OMP_NUM_THREADS=1
/work/main/.venv/bin/python - <<'PY'
import sys
sys.argv = ["bench", "--workdir", "/work/bench", "--schedule", "80epochs", "--device", "cpu", "--save-every", "5"]
sys.path.insert(0, "benchmarks")
import bench_domain_shift as b
args = b.parse_args()
b.Bench(args).train(622, 2, b.Arm("DropGen", "DropGenTrainer_minimix2_p075_80epochs", plans=args.plans))
print("DropGen seed 2 trained", flush=True)
PY
