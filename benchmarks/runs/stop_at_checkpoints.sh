#!/bin/bash
# Stops every runs/continue.sh and bench_domain_shift.py run on this machine (pkill -f: all of them, not one) and
# every training they started, each once it has written its next checkpoint_latest.pth (so little is lost;
# continue.sh resumes from there). W: the benchmark's --workdir.
W=${W:-/work/bench}
R=$W/nnUNet_results
pkill -f runs/continue.sh  # the driver would start its next stage
pkill -STOP -f bench_domain_shift  # paused: a stage whose training stops would start its next model
stop_one() {  # $1: pid of a training process; its fold folder found from -tr, -p and the dataset id
  local pid=$1 args trainer plans ds fold_name fold before
  args=$(tr '\0' ' ' < /proc/$pid/cmdline)
  trainer=$(sed -E 's/.* -tr ([^ ]+) .*/\1/' <<< "$args")
  plans=$(sed -E 's/.* -p ([^ ]+) .*/\1/' <<< "$args")
  ds=$(awk '{for(i=1;i<=NF;i++) if($i=="3d_fullres") print $(i-1)}' <<< "$args")
  fold_name=$(awk '{for(i=1;i<=NF;i++) if($i=="3d_fullres") print $(i+1)}' <<< "$args")
  fold=$(ls -d $R/Dataset${ds}_*/${trainer}__${plans}__3d_fullres/fold_$fold_name)
  before=$(stat -c %Y $fold/checkpoint_latest.pth 2>/dev/null || echo 0)
  echo "$(date -u) waiting for $trainer (dataset $ds) to checkpoint"
  while [ "$(stat -c %Y $fold/checkpoint_latest.pth 2>/dev/null || echo 0)" = "$before" ]; do sleep 10; done
  sleep 20
  pkill -P $pid; kill $pid
  echo "$(date -u) stopped $trainer (dataset $ds) after $(grep -h 'Epoch time' $fold/training_log_*.txt | wc -l) epochs"
}
trainings=""  # the benchmark's training processes (python -c ...), not their data-augmentation workers
for p in $(pgrep -f "python -c import functools"); do
  parent=$(ps -o ppid= -p $p | tr -d ' ')
  tr '\0' ' ' < /proc/$parent/cmdline | grep -q "import functools" || trainings="$trainings $p"
done
echo "trainings:$trainings"
for p in $trainings; do stop_one $p & done
wait
pkill -f bench_domain_shift
pkill -CONT -f bench_domain_shift  # so that the paused ones receive the signal
pgrep -af python
echo "$(date -u) all stopped"
