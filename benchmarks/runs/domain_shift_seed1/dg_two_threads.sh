#!/bin/bash
# As run on 2026-12-01: /work/snap2 was a git worktree of this repository (removed since), /work/bench the
# benchmark's --workdir; on another machine use a checkout and copy runs/*/nnUNet_results into the workdir.
# when seed 1's ERM is final, let DropGen reach its next checkpoint, then continue it alone with two threads
# (one thread alone leaves a core idle: DropGen alone with two threads ran 57 s per epoch on seed 0)
res=/work/bench/nnUNet_results/Dataset621_DomainShiftSeed1
erm=$res/nnUNetTrainer_80epochs__nnUNetPlansCPU__3d_fullres/fold_all/checkpoint_final.pth
dg=$res/DropGenTrainer_minimix2_p075_80epochs__nnUNetPlansCPU__3d_fullres/fold_all
while [ ! -f "$erm" ]; do sleep 20; done
echo "=== $(date -u) ERM final; waiting for DropGen's next checkpoint"
before=$(stat -c %Y $dg/checkpoint_latest.pth 2>/dev/null || echo 0)
while [ "$(stat -c %Y $dg/checkpoint_latest.pth 2>/dev/null || echo 0)" = "$before" ]; do
  [ -f $dg/checkpoint_final.pth ] && exit 0; sleep 10; done
sleep 30
echo "=== $(date -u) stopping the side-by-side run at DropGen's checkpoint"
pkill -f seed1.sh; pkill -f bench_domain_shift.py; sleep 2
pkill -f nnUNetv2_train; pkill -f "numpy.random.seed"; sleep 5
pgrep -af python | grep -v dg_two_threads
cd /work/snap2 && git checkout -q --detach bdb7379
echo "=== $(date -u) DropGen continued alone, two threads"
PYTHONPATH=/work/snap2 /work/main/.venv/bin/python benchmarks/bench_domain_shift.py --workdir /work/bench \
  --schedule 80epochs --seeds 0 1 --choose-p 0.75 --few-shot 0 --parallel 1 --disable-tta \
  --arms DropGen --report /work/bench/report_80epochs_seeds01_ERM_DropGen.md
echo "=== $(date -u) done"
