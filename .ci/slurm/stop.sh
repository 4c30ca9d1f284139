#!/usr/bin/env bash
# .ci/slurm/stop.sh - stop the daemons started by start.sh, by PID only (from run/slurm.pids).
# Cancels remaining jobs first (SLURM_STOP_CANCEL_JOBS=0 to skip). Each PID is verified against
# /proc/PID/comm before it is signalled (SIGTERM, SIGKILL after 30 s).
set -uo pipefail
BASE=${LOCAL_SLURM_DIR:-/tmp/local-slurm}
PIDS=$BASE/run/slurm.pids
T0=$(date +%s%N)
log() { local ms=$(( ($(date +%s%N) - T0) / 1000000 )); printf '[local-slurm stop %3d.%02ds] %s\n' $((ms / 1000)) $((ms % 1000 / 10)) "$*"; }
[ -s "$PIDS" ] || { log "nothing to stop ($PIDS empty/missing)"; exit 0; }

pid_of() { awk -v n="$1" '$1==n{print $2}' "$PIDS" | tail -1; }
# true if PID $2 is a live (non-zombie) process named $1; an exited daemon stays a zombie until
# PID 1 reaps it (~1.5 s in this sandbox), which we count as stopped
is_ours() { [ -n "$2" ] && [ "$(cat /proc/"$2"/comm 2>/dev/null)" = "$1" ] &&
            [ "$(awk '{print $3}' /proc/"$2"/stat 2>/dev/null)" != Z ]; }

ctld=$(pid_of slurmctld)
if [ "${SLURM_STOP_CANCEL_JOBS:-1}" = 1 ] && is_ours slurmctld "$ctld"; then
  jobs=$(squeue -h -o %A 2>/dev/null | tr '\n' ' ')
  if [ -n "${jobs// /}" ]; then
    log "cancelling jobs: $jobs"; scancel $jobs 2>/dev/null || true
    for i in $(seq 1 60); do [ -z "$(squeue -h -o %A -t PD,R,CG,S 2>/dev/null)" ] && break; sleep 0.25; done
  fi
fi

for name in slurmd slurmctld slurmdbd mariadbd munged; do
  pid=$(pid_of $name)
  [ -n "$pid" ] || continue
  if ! is_ours "$name" "$pid"; then
    log "$name pid $pid not running (or reused by another program) - skipped"
  else
    kill -TERM "$pid"
    for i in $(seq 1 300); do is_ours "$name" "$pid" || break; sleep 0.1; done
    if is_ours "$name" "$pid"; then log "$name pid $pid ignored SIGTERM -> SIGKILL"; kill -KILL "$pid"; sleep 0.2; fi
    log "$name pid $pid stopped"
  fi
  sed -i "/^$name /d" "$PIDS"
done
rm -f /run/slurmd.pid /run/slurmctld.pid /run/slurmdbd.pid
log "all stopped"
