#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for tests and CI.
#
#   scripts/slurm_cluster.sh start    install (if needed), configure and start munge, MariaDB + slurmdbd
#                                     (job accounting, so `sacct` works), slurmctld and slurmd; wait until
#                                     the node is idle and a test job (sbatch --wrap hostname) runs
#   scripts/slurm_cluster.sh stop     stop the daemons this script started
#   scripts/slurm_cluster.sh status   print the daemons' state and sinfo; exit 0 when the cluster is up
#
# Target: Debian 12 (SLURM 22.05, munge 0.5.15), running as root, without systemd. The node
# advertises the machine's real CPUs and memory (from `slurmd -C`). All state, spool, log and
# pid files live under $PAVI_SLURM_DIR (default /tmp/pavi-slurm). Running `start` twice is
# harmless: a running cluster is checked and left as it is.
#
# Environment variables:
#   PAVI_SLURM_DIR              state/spool/log/pid folder                  (default /tmp/pavi-slurm)
#   PAVI_SLURM_PARTITION        name of the default partition               (default debug)
#   PAVI_SLURM_DEF_MEM_PER_CPU  MiB given per CPU to a job that asks for none (default 2048)
#   PAVI_SLURM_START_TIMEOUT    seconds to wait for each daemon, the node, the test job (default 60)
#   PAVI_SLURM_ACCOUNTING       1 = job accounting through slurmdbd + MariaDB, so that `sacct`
#                               answers (submitit reads job states with it); 0 = none (default 1).
#                               Skipped, with a warning, when its packages cannot be installed.
#   PAVI_SLURM_GPUS             GPUs the node advertises, with a `gpu` partition when > 0 (default 1).
#                               Scheduling tokens only (gres.conf File=/dev/null, no device): jobs
#                               asking for --gpus-per-node are accepted and run on the CPU, which
#                               tests the GPU submission path (hydra/launcher=slurm_gpu). 0 = none.
#
# On a machine with real GPUs, set PAVI_SLURM_GPUS to their number and replace File=/dev/null in
# /etc/slurm/gres.conf by /dev/nvidia[0-N] (or use AutoDetect=nvml) to confine jobs to their GPUs.
set -euo pipefail

DIR="${PAVI_SLURM_DIR:-/tmp/pavi-slurm}"
PARTITION="${PAVI_SLURM_PARTITION:-debug}"
DEF_MEM_PER_CPU="${PAVI_SLURM_DEF_MEM_PER_CPU:-2048}"
TIMEOUT="${PAVI_SLURM_START_TIMEOUT:-60}"
ACCOUNTING="${PAVI_SLURM_ACCOUNTING:-1}"
GPUS="${PAVI_SLURM_GPUS:-1}"
DBD_CONF=/etc/slurm/slurmdbd.conf
DB_PID=/run/mysqld/mariadb.pid  # written by the mysql user
DB_SOCKET=/run/mysqld/mysqld.sock
DBD_PID="$DIR/run/slurmdbd.pid"
CONF=/etc/slurm/slurm.conf
GRES=/etc/slurm/gres.conf
MUNGE_KEY=/etc/munge/munge.key
MUNGE_PID="$DIR/run/munged.pid"
MUNGE_SOCKET=/run/munge/munge.socket.2
CTLD_PID="$DIR/run/slurmctld.pid"
SLURMD_PID="$DIR/run/slurmd.pid"

log() { echo "slurm_cluster: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

pid_alive() {  # pid_alive PIDFILE -> 0 when the process named in PIDFILE runs
    [[ -s "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

apt_install() {  # apt_install PACKAGE... -> 0 when installed (runs apt-get update once if needed)
    [[ $(id -u) -eq 0 ]] || { log "packages $* are missing and installing them needs root"; return 1; }
    command -v apt-get >/dev/null || { log "packages $* are missing and apt-get is not available (Debian/Ubuntu only)"; return 1; }
    log "installing $* with apt-get"
    local apt=(apt-get -o DPkg::Lock::Timeout=600 -y -q)
    export DEBIAN_FRONTEND=noninteractive
    "${apt[@]}" install --no-install-recommends "$@" >>"$DIR/log/apt.log" 2>&1 && return 0
    "${apt[@]}" update >>"$DIR/log/apt.log" 2>&1 || true
    "${apt[@]}" install --no-install-recommends "$@" >>"$DIR/log/apt.log" 2>&1 && return 0
    log "could not install $* (see $DIR/log/apt.log): $(tail -n 2 "$DIR/log/apt.log" | tr '\n' ' ')"
    return 1
}

install_packages() {
    local missing=()
    command -v slurmctld >/dev/null || missing+=(slurmctld)
    command -v slurmd >/dev/null || missing+=(slurmd)
    command -v sbatch >/dev/null || missing+=(slurm-client)
    command -v munged >/dev/null || missing+=(munge)
    [[ ${#missing[@]} -eq 0 ]] && return 0
    apt_install "${missing[@]}" || die "SLURM packages ${missing[*]} could not be installed"
}

install_accounting() {  # -> 0 when slurmdbd and MariaDB are available
    local missing=()
    command -v slurmdbd >/dev/null || missing+=(slurmdbd)
    command -v mariadbd >/dev/null || missing+=(mariadb-server)
    [[ ${#missing[@]} -eq 0 ]] && return 0
    apt_install "${missing[@]}"
}

start_database() {
    if pid_alive "$DB_PID" && mariadb -e 'select 1' >/dev/null 2>&1; then
        return 0
    fi
    install -d -o mysql -g mysql /run/mysqld "$DIR/log/mariadb"
    if [[ ! -d /var/lib/mysql/mysql ]]; then
        mariadb-install-db --user=mysql --datadir=/var/lib/mysql >>"$DIR/log/mariadb.log" 2>&1 \
            || die "could not initialise MariaDB; see $DIR/log/mariadb.log"
    fi
    setsid mariadbd --user=mysql --datadir=/var/lib/mysql --socket="$DB_SOCKET" --skip-networking \
        --pid-file="$DB_PID" --log-error="$DIR/log/mariadb/mariadb.log" </dev/null >/dev/null 2>&1 &
    for _ in $(seq $((TIMEOUT * 2))); do
        mariadb -e 'select 1' >/dev/null 2>&1 && break
        sleep 0.5
    done
    mariadb -e 'select 1' >/dev/null 2>&1 || die "MariaDB did not start; see $DIR/log/mariadb/mariadb.log"
    mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
        CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
}

start_slurmdbd() {
    pid_alive "$DBD_PID" && return 0
    cat >"$DBD_CONF" <<EOF
# Written by scripts/slurm_cluster.sh: job accounting for the one-node test cluster.
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
PidFile=$DBD_PID
LogFile=$DIR/log/slurmdbd.log
EOF
    chmod 600 "$DBD_CONF"
    slurmdbd || die "slurmdbd failed to start; see $DIR/log/slurmdbd.log"
    for _ in $(seq $((TIMEOUT * 2))); do
        sacctmgr -n list cluster >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    die "slurmdbd does not answer; see $DIR/log/slurmdbd.log"
}

start_munge() {
    if pid_alive "$MUNGE_PID" && munge -n </dev/null | unmunge >/dev/null 2>&1; then
        return 0
    fi
    if munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
        log "munged already running (not started by this script)"
        return 0
    fi
    if [[ ! -s "$MUNGE_KEY" ]]; then
        log "creating $MUNGE_KEY"
        mkdir -p /etc/munge
        if command -v mungekey >/dev/null; then
            mungekey --create --keyfile="$MUNGE_KEY" --force
        else
            dd if=/dev/urandom of="$MUNGE_KEY" bs=1 count=1024 status=none
        fi
    fi
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    if id munge >/dev/null 2>&1; then
        chown munge:munge "$MUNGE_KEY" /etc/munge /run/munge /var/log/munge /var/lib/munge
        chmod 0700 /etc/munge
        chmod 0600 "$MUNGE_KEY"
        chmod 0755 /run/munge
        # munged writes its own pid file; it must be writable by the munge user.
        install -d -o munge -g munge "$DIR/run/munge"
        runuser -u munge -- munged --pid-file="$DIR/run/munge/munged.pid" \
            || die "munged failed to start as user munge (see /var/log/munge/munged.log)"
        ln -sf "$DIR/run/munge/munged.pid" "$MUNGE_PID"
    else
        chown root:root "$MUNGE_KEY"
        chmod 0600 "$MUNGE_KEY"
        munged --force --pid-file="$MUNGE_PID" || die "munged failed to start as root"
    fi
    for _ in $(seq 50); do
        munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    die "munged started but credentials cannot be encoded/decoded (socket $MUNGE_SOCKET)"
}

write_config() {
    local node
    node=$(slurmd -C | head -n 1)  # NodeName=<host> CPUs=.. Boards=.. ... RealMemory=..
    [[ "$node" == NodeName=* ]] || die "slurmd -C printed no node line: $node"
    local host=${node%% *}
    host=${host#NodeName=}
    local gres_types="" gres_node="" gpu_partition=""
    if [[ $GPUS -gt 0 ]]; then
        gres_types="GresTypes=gpu"
        gres_node=" Gres=gpu:$GPUS"
        gpu_partition="PartitionName=gpu Nodes=$host MaxTime=INFINITE State=UP"
    fi
    mkdir -p /etc/slurm
    cat >"$CONF.new" <<EOF
# Written by scripts/slurm_cluster.sh: a one-node cluster for tests. Regenerated by each start.
ClusterName=pavi
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
$gres_types
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
# No cgroups here (no systemd, possibly no cgroup delegation): track processes by pid.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
$(if [[ $ACCOUNTING == 1 ]]; then echo "AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost"; else echo "AccountingStorageType=accounting_storage/none"; fi)
# Consumable cores and memory, so several small jobs share the node.
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$DEF_MEM_PER_CPU
ReturnToService=2
SchedulerType=sched/backfill
# Schedule every few seconds (a test cluster: short turnaround over scheduler load).
SchedulerParameters=sched_interval=2,bf_interval=2
# Pre-emption / time-limit signalling as on a production cluster (submitit's --signal works).
KillWait=30
MinJobAge=600
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
$node$gres_node
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP
$gpu_partition
EOF
    {
        echo "# Written by scripts/slurm_cluster.sh: $GPUS schedulable GPU token(s), no device behind them"
        echo "# (slurmd counts a GPU only with a File=; /dev/null stands in for /dev/nvidiaN)."
        if [[ $GPUS -gt 0 ]]; then echo "NodeName=$host Name=gpu File=/dev/null Count=$GPUS"; fi
    } >"$GRES.new"
}

wait_node_idle() {
    local state=""
    for _ in $(seq $((TIMEOUT * 2))); do
        state=$(sinfo -h -N -o '%T' 2>/dev/null | head -n 1 || true)
        case "$state" in
            idle|mixed|allocated) return 0 ;;
            drain*|down*)
                scontrol update NodeName="$(sinfo -h -N -o '%N' | head -n 1)" State=RESUME >/dev/null 2>&1 || true ;;
        esac
        sleep 0.5
    done
    die "node not idle after ${TIMEOUT}s (state '${state:-no answer}'); see $DIR/log/slurmctld.log and $DIR/log/slurmd.log"
}

smoke_test() {
    local out="$DIR/log/smoke-%j.out" id state=""
    id=$(sbatch --parsable --job-name=smoke --time=1 --mem=100M -o "$out" --wrap hostname) \
        || die "sbatch --wrap hostname was refused"
    for _ in $(seq $((TIMEOUT * 2))); do
        state=$(scontrol show job "$id" 2>/dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p')
        case "$state" in
            COMPLETED) break ;;
            FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY|BOOT_FAIL|DEADLINE)
                die "test job $id ended $state; see $DIR/log/slurmd.log" ;;
        esac
        sleep 0.5
    done
    [[ "$state" == COMPLETED ]] || die "test job $id not finished after ${TIMEOUT}s (state '$state')"
    local file="${out//%j/$id}"
    [[ "$(cat "$file")" == "$(hostname)" ]] || die "test job $id wrote '$(cat "$file")' to $file, expected '$(hostname)'"
    log "test job $id ran on $(cat "$file")"
}

cluster_up() {
    pid_alive "$CTLD_PID" && pid_alive "$SLURMD_PID" && sinfo -h >/dev/null 2>&1
}

cmd_start() {
    local t0=$SECONDS
    mkdir -p "$DIR"/{state,spool,log,run}
    install_packages
    if [[ $ACCOUNTING == 1 ]] && ! install_accounting; then
        log "WARNING: continuing without job accounting (sacct will not answer)"
        ACCOUNTING=0
    fi
    start_munge
    write_config
    if cluster_up && cmp -s "$CONF.new" "$CONF" && cmp -s "$GRES.new" "$GRES"; then
        log "already running"
        rm -f "$CONF.new" "$GRES.new"
    else
        # A half-started cluster (one daemon alive), or one with another configuration, is restarted.
        cluster_up && log "configuration changed: restarting slurmctld and slurmd"
        cmd_stop_slurm
        mv "$CONF.new" "$CONF"
        mv "$GRES.new" "$GRES"
        if [[ $ACCOUNTING == 1 ]]; then
            start_database
            start_slurmdbd
        fi
        slurmctld || die "slurmctld failed to start; see $DIR/log/slurmctld.log"
        slurmd || die "slurmd failed to start; see $DIR/log/slurmd.log"
    fi
    wait_node_idle
    smoke_test
    log "cluster up in $((SECONDS - t0))s: $(sinfo -h -N -o '%N %P %c CPUs %m MiB %T' | head -n 1)"
}

stop_pidfile() {  # stop_pidfile NAME PIDFILE
    local pid
    pid_alive "$2" || return 0
    pid=$(cat "$2")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || { log "stopped $1 ($pid)"; return 0; }
        sleep 0.2
    done
    kill -9 "$pid" 2>/dev/null || true
    log "killed $1 ($pid)"
}

cmd_stop_slurm() {
    stop_pidfile slurmd "$SLURMD_PID"
    stop_pidfile slurmctld "$CTLD_PID"
}

cmd_stop() {
    cmd_stop_slurm
    stop_pidfile slurmdbd "$DBD_PID"
    stop_pidfile mariadbd "$DB_PID"
    stop_pidfile munged "$MUNGE_PID"
    rm -f "$MUNGE_PID"
}

cmd_status() {
    local up=0 name file
    for name in munged mariadbd slurmdbd slurmctld slurmd; do
        case $name in
            munged) file=$MUNGE_PID ;; mariadbd) file=$DB_PID ;; slurmdbd) file=$DBD_PID ;;
            slurmctld) file=$CTLD_PID ;; slurmd) file=$SLURMD_PID ;;
        esac
        if pid_alive "$file"; then
            echo "$name: running (pid $(cat "$file"))"
        elif [[ $name == mariadbd || $name == slurmdbd ]]; then
            echo "$name: stopped (needed only for job accounting)"
        else
            echo "$name: stopped"; up=1
        fi
    done
    if [[ $up -eq 0 ]] && sinfo >/dev/null 2>&1; then
        sinfo -N -o '%N %P %c %m %T'
        return 0
    fi
    return 3
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
