#!/bin/bash
# As run on 2026-11-30: /work/bench_src was a git worktree of this repository at 557b759 (removed since); on
# another machine use a checkout, and the nnUNet_results/ folder beside this script for the trained model.
source /work/main/.venv/bin/activate
export PYTHONPATH=/work/bench_src
export nnUNet_raw=/work/bench/nnUNet_raw nnUNet_preprocessed=/work/bench/nnUNet_preprocessed nnUNet_results=/work/bench/nnUNet_results
export nnUNet_extTrainer=/work/bench_src/nnunetv2_dropgen/ext_trainers nnUNet_compile=false
cd /work/bench_src
exec python -m nnunetv2_dropgen.cli.main evaluate -d 620 -tr nnUNetTrainer_cpuBench DropGenTrainer_minimix2_p075_cpuBench DropGenTrainer_minimix2_p075_48epochs DropGenTrainer_minimix2_featuresOnly_cpuBench -p nnUNetPlansCPU -f all --in-domain source source_padded --disable_tta --out /work/bench/evaluation_long
