#!/usr/bin/env bash
# .ci/slurm/start.sh - bring up a REAL single-node Slurm cluster on this host (Debian 12, root, no
# systemd) for l2lflow's `-m slurm` tests. Project copy of the verified ../shared/slurm/start.sh.
#
#   munged -> [mariadbd -> slurmdbd] -> slurmctld -> slurmd, node = $(hostname -s)
#   partitions: batch (default), gpus (same node, fake gres gpu:1 backed by /dev/null)
#
# Idempotent: installs missing packages, (re)writes config, starts only daemons that are not
# already running (checked via PID + /proc/PID/comm), waits until the node is idle.
# PIDs of every daemon are written to $LOCAL_SLURM_DIR/run/slurm.pids ("name pid" per line);
# stop.sh stops exactly those PIDs.
#
# Environment knobs:
#   LOCAL_SLURM_DIR   base dir for pids/db/logs       (default /tmp/local-slurm)
#   SLURM_ACCOUNTING  slurmdbd | none                 (default slurmdbd -> real sacct; 'none' = no
#                     mariadb/slurmdbd, sacct unusable, snakemake needs --slurm-status-command squeue)
#   SLURM_DB_PORT     TCP port for the private mariadbd on 127.0.0.1 (default 13306)
#   SLURM_CPUS        CPUs to advertise (default: max(nproc, 8)). >nproc adds
#                     SlurmdParameters=config_overrides. Oversubscribing lets the slurm tests run a
#                     few 1-core worker jobs side by side on a 2-core CI machine (the workers idle).
#   SLURM_ACCOUNT     Slurm account created for root in slurmdbd mode (default ci)
set -euo pipefail

BASE=${LOCAL_SLURM_DIR:-/tmp/local-slurm}
ACCOUNTING=${SLURM_ACCOUNTING:-slurmdbd}
DB_PORT=${SLURM_DB_PORT:-13306}
ACCOUNT=${SLURM_ACCOUNT:-ci}
RUN=$BASE/run
PIDS=$RUN/slurm.pids
DBDIR=$BASE/mysql
NODE=$(hostname -s)
T0=$(date +%s%N)

# elapsed seconds without bc (not installed on a fresh Debian)
log() { local ms=$(( ($(date +%s%N) - T0) / 1000000 )); printf '[local-slurm start %3d.%02ds] %s\n' $((ms / 1000)) $((ms % 1000 / 10)) "$*"; }
die() { log "ERROR: $*"; exit 1; }
trap 'die "failed at line $LINENO: $BASH_COMMAND (logs: /var/log/slurm/)"' ERR
[ "$(id -u)" = 0 ] || die "must run as root"
case $ACCOUNTING in slurmdbd|none) ;; *) die "SLURM_ACCOUNTING must be slurmdbd or none";; esac

# ---------------------------------------------------------------- 1. packages
pkgs=(munge slurmctld slurmd slurm-client)
[ "$ACCOUNTING" = slurmdbd ] && pkgs+=(slurmdbd mariadb-server)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing: ${missing[*]}"
  # keep the packages' init scripts from starting system daemons (munge, mariadb on :3306): this
  # script starts its own and would otherwise find a foreign munged. Docker images ship this file.
  policy_added=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; policy_added=1
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT   # also when apt-get fails
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [ $policy_added = 1 ]; then rm -f /usr/sbin/policy-rc.d; trap - EXIT; fi
fi
[ -s /etc/munge/munge.key ] || { log "creating munge key"; mungekey --create --keyfile=/etc/munge/munge.key; }
chown munge:munge /etc/munge/munge.key; chmod 0400 /etc/munge/munge.key

# ---------------------------------------------------------------- 2. directories
mkdir -p "$RUN" /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge /var/log/munge /var/lib/munge
chown slurm:slurm /var/spool/slurmctld /var/log/slurm
chown munge:munge /run/munge /var/log/munge /var/lib/munge; chmod 0755 /run/munge
touch /var/log/slurm/jobcomp.log; chown slurm:slurm /var/log/slurm/jobcomp.log
touch "$PIDS"

# ---------------------------------------------------------------- 3. config
# node line from the hardware, memory lowered to 85% of what slurmd sees
hw=$(slurmd -C | head -1)                       # NodeName=vm CPUs=2 Boards=1 ... RealMemory=24152
mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$hw"); mem=$(( mem * 85 / 100 ))
nproc_=$(nproc); CPUS=${SLURM_CPUS:-$(( nproc_ < 8 ? 8 : nproc_ ))}
if [ "$CPUS" -eq "$nproc_" ]; then
  nodehw=$(sed -e 's/^NodeName=[^ ]* //' -e 's/RealMemory=[0-9]*//' <<<"$hw"); override=""
else
  nodehw="CPUs=$CPUS"; override="SlurmdParameters=config_overrides"
fi
if [ "$ACCOUNTING" = slurmdbd ]; then
  acct="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819"
else
  acct="AccountingStorageType=accounting_storage/none"
fi

write_if_changed() {   # path mode owner <content on stdin>; returns 0 if changed
  local tmp; tmp=$(mktemp); cat >"$tmp"
  if [ -f "$1" ] && cmp -s "$tmp" "$1"; then rm -f "$tmp"; return 1; fi
  install -m "$2" -o "$3" -g "$3" "$tmp" "$1"; rm -f "$tmp"; return 0
}
changed=0
write_if_changed /etc/slurm/slurm.conf 0644 root <<EOF && changed=1 || true
# generated by l2lflow .ci/slurm/start.sh (state in $BASE)
ClusterName=local
SlurmctldHost=$NODE(127.0.0.1)
AuthType=auth/munge
SlurmUser=slurm
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=500
ReturnToService=2
MinJobAge=300
GresTypes=gpu
JobAcctGatherType=jobacct_gather/linux
$acct
JobCompType=jobcomp/filetxt
JobCompLoc=/var/log/slurm/jobcomp.log
$override
NodeName=$NODE NodeAddr=127.0.0.1 $nodehw RealMemory=$mem Gres=gpu:1 State=UNKNOWN
PartitionName=batch Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
PartitionName=gpus Nodes=$NODE MaxTime=INFINITE State=UP
EOF
# gres/gpu needs File=: a file-less gpu is dropped by slurmd 22.05 ("Removing file-less GPU")
write_if_changed /etc/slurm/gres.conf 0644 root <<EOF && changed=1 || true
AutoDetect=off
NodeName=$NODE Name=gpu File=/dev/null
EOF
if [ "$ACCOUNTING" = slurmdbd ]; then
write_if_changed /etc/slurm/slurmdbd.conf 0600 slurm <<EOF && changed=1 || true
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=slurm
LogFile=/var/log/slurm/slurmdbd.log
PidFile=/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=slurmpw
StorageLoc=slurm_acct_db
EOF
fi

# ---------------------------------------------------------------- 4. daemons
alive() {  # name -> pid from $PIDS if that pid is alive and is that program
  local pid; pid=$(awk -v n="$1" '$1==n{print $2}' "$PIDS" | tail -1)
  [ -n "$pid" ] && [ "$(cat /proc/"$pid"/comm 2>/dev/null)" = "$1" ] &&
    [ "$(awk '{print $3}' /proc/"$pid"/stat 2>/dev/null)" != Z ] && echo "$pid"
}
record() { sed -i "/^$1 /d" "$PIDS"; echo "$1 $2" >>"$PIDS"; }
wait_pidfile() {  # name pidfile -> wait for a live pid of that program in pidfile, record it
  local i pid
  for i in $(seq 1 100); do
    pid=$(cat "$2" 2>/dev/null || true)
    if [ -n "$pid" ] && [ "$(cat /proc/"$pid"/comm 2>/dev/null)" = "$1" ]; then record "$1" "$pid"; return 0; fi
    sleep 0.1
  done
  die "$1 did not start (see logs)"
}
wait_for() {  # description timeout_s command...
  local d=$1 t=$2 i; shift 2
  for i in $(seq 1 $((t * 4))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.25; done
  die "timeout waiting for $d"
}

# munge
if ! alive munged >/dev/null; then
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    die "a munged not started by this script is already running; stop it or add it to $PIDS"
  fi
  rm -f /run/munge/munged.pid
  runuser -u munge -- /usr/sbin/munged
  wait_pidfile munged /run/munge/munged.pid
  log "munged started pid $(alive munged)"
fi
wait_for munge 10 sh -c 'munge -n | unmunge'

if [ "$ACCOUNTING" = slurmdbd ]; then
  # private mariadb instance under $DBDIR, TCP 127.0.0.1:$DB_PORT
  if ! alive mariadbd >/dev/null; then
    if [ ! -d "$DBDIR/data/mysql" ]; then
      mkdir -p "$DBDIR/data"; chown -R mysql:mysql "$DBDIR"
      mariadb-install-db --user=mysql --datadir="$DBDIR/data" --auth-root-authentication-method=socket \
        --skip-test-db >"$DBDIR/install.log" 2>&1 || die "mariadb-install-db failed ($DBDIR/install.log)"
    fi
    rm -f "$DBDIR/mysqld.pid"
    nohup /usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$DBDIR/data" \
      --socket="$DBDIR/mysqld.sock" --pid-file="$DBDIR/mysqld.pid" --bind-address=127.0.0.1 \
      --port="$DB_PORT" --log-error="$DBDIR/error.log" --skip-name-resolve \
      --innodb-buffer-pool-size=128M --innodb-lock-wait-timeout=900 </dev/null >/dev/null 2>&1 &
    wait_for mariadbd 60 mariadb --socket="$DBDIR/mysqld.sock" -e 'select 1'
    wait_pidfile mariadbd "$DBDIR/mysqld.pid"
    log "mariadbd started pid $(alive mariadbd) port $DB_PORT"
  fi
  mariadb --socket="$DBDIR/mysqld.sock" -e "
    CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurmpw';
    CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurmpw';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
  if ! alive slurmdbd >/dev/null; then
    rm -f /run/slurmdbd.pid
    slurmdbd                                  # daemonizes, writes /run/slurmdbd.pid
    wait_pidfile slurmdbd /run/slurmdbd.pid
    log "slurmdbd started pid $(alive slurmdbd)"
  fi
  wait_for slurmdbd 60 timeout 5 sacctmgr -n show cluster
fi

if ! alive slurmctld >/dev/null; then
  # state saved by a cluster of another name makes slurmctld refuse to start: this is a throw-away
  # test cluster, so drop that state
  if [ -f /var/spool/slurmctld/clustername ] && [ "$(cat /var/spool/slurmctld/clustername)" != local ]; then
    log "dropping state of another cluster in /var/spool/slurmctld"; find /var/spool/slurmctld -mindepth 1 -delete
  fi
  rm -f /run/slurmctld.pid
  slurmctld                                   # daemonizes (drops to SlurmUser=slurm)
  wait_pidfile slurmctld /run/slurmctld.pid
  log "slurmctld started pid $(alive slurmctld)"
elif [ $changed = 1 ]; then
  log "config changed -> scontrol reconfigure"; scontrol reconfigure || true
fi
wait_for slurmctld 30 scontrol ping

if ! alive slurmd >/dev/null; then
  rm -f /run/slurmd.pid
  slurmd                                      # daemonizes, runs as root
  wait_pidfile slurmd /run/slurmd.pid
  log "slurmd started pid $(alive slurmd)"
fi

# ---------------------------------------------------------------- 5. wait for node idle
resumed=0
for i in $(seq 1 240); do
  # %t = compact state; a trailing '*' means slurmd has not (re)registered yet
  st=$(sinfo -h -n "$NODE" -o %t 2>/dev/null | head -1 || true)
  case $st in
    idle|mix|alloc) break ;;
    drain*|drng*|down*|inval*|fail*)
      # stale DRAIN/DOWN from an earlier run is kept in StateSaveLocation
      if [ $resumed = 0 ]; then scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true; resumed=1; fi ;;
  esac
  sleep 0.25
done
case $st in idle|mix|alloc) ;; *) sinfo -R; die "node $NODE not usable (state '$st')";; esac

if [ "$ACCOUNTING" = slurmdbd ]; then
  # account for snakemake's slurm_account validation (sacctmgr list user <you>)
  sacctmgr -n -P list account "$ACCOUNT" format=account | grep -qx "$ACCOUNT" ||
    sacctmgr -i add account "$ACCOUNT" Description=ci Organization=ci >/dev/null
  sacctmgr -n -P -s list user root format=account | grep -qx "$ACCOUNT" ||
    sacctmgr -i add user root account="$ACCOUNT" >/dev/null
fi

log "cluster up: node $NODE is $st; accounting=$ACCOUNTING"
sinfo
echo "PIDs ($PIDS):"; cat "$PIDS"
