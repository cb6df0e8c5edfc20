#!/bin/bash
# As run on 2026-12-02 before the session ended: stop every training of the benchmark once seed 1's featuresOnly
# has written its next checkpoint_latest.pth (epoch 60), so that little is lost; seed 2's ERM stopped with it.
fo=/work/bench/nnUNet_results/Dataset621_DomainShiftSeed1/DropGenTrainer_minimix2_featuresOnly_80epochs__nnUNetPlansCPU__3d_fullres/fold_all
before=$(stat -c %Y $fo/checkpoint_latest.pth)
while [ "$(stat -c %Y $fo/checkpoint_latest.pth)" = "$before" ]; do sleep 10; done
sleep 20
echo "=== $(date -u) stopping at featuresOnly's checkpoint"
pkill -f after_DA5.sh; pkill -f seed1_DA5_featuresOnly.sh; pkill -f bench_domain_shift.py; sleep 2
pkill -f nnUNetv2_train; pkill -f "numpy.random.seed"; sleep 5
pgrep -af python
echo "=== $(date -u) stopped"
