#!/bin/bash
# Copies what a benchmark run trained at 20,000 iterations into runs/domain_shift_seed<s>/nnUNet_results/ (seed s:
# the dataset id's last digit) in nnU-Net's results layout, so that the next session's runs/continue.sh reuses or
# continues it: each model's plans, dataset and fingerprint files, its training logs, and checkpoint_final.pth, or
# checkpoint_latest.pth while it is not final. Run it after runs/stop_at_checkpoints.sh; then commit.
# W: the benchmark's --workdir.
set -eu
cd "$(dirname "$0")"
W=${W:-/work/bench}
for model in "$W"/nnUNet_results/Dataset6[2-9][0-9]_*/*_80epochs__*; do
  dataset=$(basename "$(dirname "$model")")
  id=${dataset#Dataset}
  id=${id%%_*}
  target="domain_shift_seed${id: -1}/nnUNet_results/$dataset/$(basename "$model")"
  for fold in "$model"/fold_*; do
    [ -f "$fold/checkpoint_final.pth" ] || [ -f "$fold/checkpoint_latest.pth" ] || continue
    mkdir -p "$target/$(basename "$fold")"
    cp "$model"/{dataset.json,plans.json,dataset_fingerprint.json} "$target/"
    cp "$fold"/training_log_*.txt "$target/$(basename "$fold")/"
    if [ -f "$fold/checkpoint_final.pth" ]; then
      cp "$fold/checkpoint_final.pth" "$target/$(basename "$fold")/"
      rm -f "$target/$(basename "$fold")/checkpoint_latest.pth"
    else
      cp "$fold/checkpoint_latest.pth" "$target/$(basename "$fold")/"
    fi
    echo "$target/$(basename "$fold"): $(ls "$target/$(basename "$fold")" | grep checkpoint), $(grep -h 'Epoch time' "$fold"/training_log_*.txt | wc -l) epoch lines in its logs (a resumed run repeats some)"
  done
done
