#!/bin/bash
# As run on 2026-12-02 (see seed1_DA5_featuresOnly.sh for the folders). When seed 1's DA5 is final, the core it
# used is idle: evaluate ERM, DA5 and DropGen of seeds 0 and 1 there, then volumeScaling (prediction only) on
# seed 0's 20,000-iteration DropGen, then start seed 2's ERM beside seed 1's featuresOnly (one thread each:
# two models side by side do more per hour than one with two threads).
cd /work/snap2
PY=/work/main/.venv/bin/python
res=/work/bench/nnUNet_results/Dataset621_DomainShiftSeed1
da5=$res/nnUNetTrainerDA5_80epochs__nnUNetPlansCPU__3d_fullres/fold_all/checkpoint_final.pth
common="--workdir /work/bench --schedule 80epochs --choose-p 0.75 --few-shot 0 --disable-tta"
one="env PYTHONPATH=/work/snap2 DROPGEN_BENCH_THREADS=1 OMP_NUM_THREADS=1 $PY benchmarks/bench_domain_shift.py"
while [ ! -f "$da5" ]; do sleep 20; done
echo "=== $(date -u) DA5 final: ERM, DA5, DropGen of seeds 0 and 1 evaluated"
$one $common --seeds 0 1 --arms DA5 DropGen --report /work/bench/report_80epochs_seeds01_ERM_DA5_DropGen.md
echo "=== $(date -u) volumeScaling on seed 0's DropGen (prediction only)"
$one $common --seeds 0 --arms DropGen --option-arms --options volumeScaling \
  --report /work/bench/report_80epochs_volumeScaling.md
echo "=== $(date -u) seed 2's ERM, beside seed 1's featuresOnly"
$one $common --seeds 0 2 --arms ERM --save-every 5 --report /work/bench/report_80epochs_seed2_ERM.md
echo "=== $(date -u) done"
