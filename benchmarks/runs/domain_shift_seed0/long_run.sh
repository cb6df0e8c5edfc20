#!/bin/bash
# As run on 2026-11-30: /work/bench_src was a git worktree of this repository at 557b759 (removed since); on
# another machine use a checkout, and the nnUNet_results/ folder beside this script for the trained model.
# DropGen p=0.75 on seed 0's benchmark dataset for 12,000 iterations (4x cpuBench), one torch thread, seeded as the benchmark does.
source /work/main/.venv/bin/activate
export PYTHONPATH=/work/bench_src
export nnUNet_raw=/work/bench/nnUNet_raw nnUNet_preprocessed=/work/bench/nnUNet_preprocessed nnUNet_results=/work/bench/nnUNet_results
export nnUNet_extTrainer=/work/bench_src/nnunetv2_dropgen/ext_trainers nnUNet_compile=false nnUNet_n_proc_DA=1 nnUNet_def_n_proc=1
export DROPGEN_BENCH_THREADS=1 PYTHONUNBUFFERED=1
SEEDED=$(cd /work/bench_src && python -c "import sys; sys.path.insert(0, 'benchmarks'); from bench_domain_shift import _TRAIN_SEEDED; print(_TRAIN_SEEDED)")
exec python -c "$SEEDED" 0 620 3d_fullres all -tr "$1" -p nnUNetPlansCPU -device cpu "${@:2}"
