#!/bin/bash
# Stop every training of the session once each has written its next checkpoint_latest.pth (little is lost).
R=/work/bench/nnUNet_results
pkill -f /work/session.sh; pkill -f /work/laneA2.sh   # the lanes would start their next model
stop_one() {  # $1: pid of a training process; its fold folder found from -tr and dataset id
  local pid=$1 args trainer ds fold before
  args=$(tr '\0' ' ' < /proc/$pid/cmdline)
  trainer=$(sed -E 's/.* -tr ([^ ]+) .*/\1/' <<< "$args")
  ds=$(awk '{for(i=1;i<=NF;i++) if($i=="3d_fullres") print $(i-1)}' <<< "$args")
  fold=$(ls -d $R/Dataset${ds}_*/${trainer}__nnUNetPlansCPU__3d_fullres/fold_all)
  before=$(stat -c %Y $fold/checkpoint_latest.pth 2>/dev/null || echo 0)
  echo "$(date -u) waiting for $trainer (dataset $ds) to checkpoint"
  while [ "$(stat -c %Y $fold/checkpoint_latest.pth 2>/dev/null || echo 0)" = "$before" ]; do sleep 10; done
  sleep 20
  pkill -P $pid; kill $pid
  echo "$(date -u) stopped $trainer (dataset $ds) at $(grep -c 'Epoch time' $fold/training_log_*.txt | tail -1)"
}
parents=""
for p in $(pgrep -f "^/work/main/.venv/bin/python -c import functools"); do
  pp=$(ps -o ppid= -p $p | tr -d ' ')
  tr '\0' ' ' < /proc/$pp/cmdline | grep -q "import functools" || parents="$parents $p"
done
echo "trainings: $parents"
for p in $parents; do stop_one $p & done
wait
pkill -f bench_domain_shift; sleep 3; pkill -f "numpy.random.seed"; sleep 3
pgrep -af python
echo "$(date -u) all stopped"
