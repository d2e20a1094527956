#!/usr/bin/env bash
# A real single-node Slurm (slurmctld + slurmd + munged from Debian's packages, no systemd) on localhost, for testing
# satm's Slurm executor. Follows ../shared/docs/slurm_local.md. Run as root.
#
#   bash tools/slurm_local.sh start      install if missing, write slurm.conf, start munged/slurmctld/slurmd, wait for idle
#                                        (exit 0: up; 3: cannot be installed; 1: installed but failed to start)
#   bash tools/slurm_local.sh stop       cancel all jobs, stop the daemons it started (by recorded PID only)
#   bash tools/slurm_local.sh status     daemons, sinfo, squeue
#   bash tools/slurm_local.sh selftest   start, check arrays/srun/sbatch --wait/exit codes/non-root jobs, stop
#
# Environment: SLURM_LOCAL_DIR (state, spool, logs, PIDs; default /var/spool/slurm-local), SLURM_LOCAL_CONF_DIR
# (default /etc/slurm), SLURM_LOCAL_MIN_JOB_AGE (default 300; 4 keeps `sbatch --wait` polling every 2 s, for tests).
set -uo pipefail

DIR="${SLURM_LOCAL_DIR:-/var/spool/slurm-local}"
CONF_DIR="${SLURM_LOCAL_CONF_DIR:-/etc/slurm}"
CONF="$CONF_DIR/slurm.conf"
MIN_JOB_AGE="${SLURM_LOCAL_MIN_JOB_AGE:-300}"
HOST="$(hostname -s)"
PIDS="$DIR/pids"

log() { echo "slurm_local: $*" >&2; }

need_root() {
    if [ "$(id -u)" != 0 ]; then
        log "must run as root (it installs packages and starts daemons)"
        exit 1
    fi
}

# --- install ---------------------------------------------------------------------------------------------------
have_binaries() {
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
        && command -v munged >/dev/null && command -v munge >/dev/null
}

install() {
    if have_binaries; then
        return 0
    fi
    local made_policy=0
    # Stop the packages' postinst from starting services (the image usually has this already).
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        made_policy=1
    fi
    local pkgs=(slurmctld slurmd slurm-client munge)
    log "installing ${pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y --no-install-recommends "${pkgs[@]}" >"/tmp/slurm_local_apt.log" 2>&1; then
        log "apt-get install failed; running apt-get update and trying once more"
        apt-get update >>"/tmp/slurm_local_apt.log" 2>&1
        if ! apt-get install -y --no-install-recommends "${pkgs[@]}" >>"/tmp/slurm_local_apt.log" 2>&1; then
            tail -n 20 /tmp/slurm_local_apt.log >&2
            [ "$made_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
            log "could not install Slurm"
            return 1
        fi
    fi
    [ "$made_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
    have_binaries || { log "installed, but the Slurm/munge binaries are still missing"; return 1; }
}

# --- helpers -----------------------------------------------------------------------------------------------------
# Alive and not a zombie (kill -0 succeeds on zombies).
alive() {
    local pid="$1" st
    [ -r "/proc/$pid/stat" ] || return 1
    st="$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)"
    [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

record_pid() { echo "$1 $2" >>"$PIDS"; }

munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munge() {
    if munge_ok; then
        log "munged already answers; using it (and never stopping it)"
        return 0
    fi
    if [ ! -s /etc/munge/munge.key ]; then
        mungekey --create >/dev/null 2>&1 || { log "mungekey --create failed"; return 1; }
    fi
    chown munge:munge /etc/munge/munge.key && chmod 600 /etc/munge/munge.key
    mkdir -p /run/munge && chown munge:munge /run/munge && chmod 755 /run/munge
    # -F: foreground, so $! is munged itself (setpriv execs without forking).
    setpriv --reuid=munge --regid=munge --init-groups -- /usr/sbin/munged -F </dev/null >>"$DIR/log/munged.log" 2>&1 &
    local pid=$!
    record_pid "$pid" munged
    for _ in $(seq 1 50); do
        munge_ok && return 0
        alive "$pid" || break
        sleep 0.1
    done
    log "munged did not start:"
    tail -n 20 "$DIR/log/munged.log" >&2
    return 1
}

write_conf() {
    mkdir -p "$CONF_DIR" "$DIR/ctld" "$DIR/d" "$DIR/log"
    if ! getent hosts "$HOST" >/dev/null; then
        echo "127.0.0.1 $HOST" >>/etc/hosts
    fi
    # Topology from slurmd -C (CPUs alone makes Slurm guess one core per socket); memory 90 % of what is available.
    local topo mem
    topo="$(slurmd -C 2>/dev/null | head -n 1 | tr ' ' '\n' | grep -E '^(CPUs|Boards|SocketsPerBoard|CoresPerSocket|ThreadsPerCore)=' | tr '\n' ' ')"
    [ -n "$topo" ] || topo="CPUs=$(nproc)"
    mem="$(awk '/MemAvailable/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)"
    cat >"$CONF" <<EOF
# Written by satm tools/slurm_local.sh: a single-node Slurm on localhost for tests.
ClusterName=satm-local
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/ctld
SlurmdSpoolDir=$DIR/d
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/jobcomp.txt
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
SchedulerParameters=batch_sched_delay=0
KillWait=5
MinJobAge=$MIN_JOB_AGE
MailProg=/bin/true
NodeName=$HOST NodeAddr=127.0.0.1 $topo RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

# --- start / stop ------------------------------------------------------------------------------------------------
start() {
    need_root
    # 3: Slurm could not be installed (CI may skip the Slurm tests); 1: installed but did not start (a failure).
    install || return 3
    mkdir -p "$DIR/log"
    if [ -s "$PIDS" ]; then
        local live=0
        while read -r pid name; do alive "$pid" && live=1; done <"$PIDS"
        if [ "$live" = 1 ] && sinfo >/dev/null 2>&1; then
            log "already running (PIDs in $PIDS)"
            return 0
        fi
        log "stale PID record; stopping what is left of it first"
        stop || true
    fi
    : >"$PIDS"
    write_conf
    start_munge || { stop; return 1; }
    slurmctld -D -f "$CONF" </dev/null >>"$DIR/log/slurmctld.out" 2>&1 &
    local ctld=$!
    record_pid "$ctld" slurmctld
    slurmd -D -N "$HOST" -f "$CONF" </dev/null >>"$DIR/log/slurmd.out" 2>&1 &
    local d=$!
    record_pid "$d" slurmd
    local t0=$SECONDS state=""
    while [ $((SECONDS - t0)) -lt 60 ]; do
        # During start-up /proc/PID/comm may still say bash: only check that the processes exist.
        if ! alive "$ctld" || ! alive "$d"; then
            log "a daemon died during start-up:"
            tail -n 15 "$DIR/log/slurmctld.log" "$DIR/log/slurmctld.out" "$DIR/log/slurmd.log" "$DIR/log/slurmd.out" 2>/dev/null >&2
            stop
            return 1
        fi
        state="$(sinfo -h -n "$HOST" -o %T 2>/dev/null | head -n 1)"
        if [ "$state" = idle ]; then
            log "up: node $HOST idle (MinJobAge=$MIN_JOB_AGE, state in $DIR)"
            return 0
        fi
        sleep 0.25
    done
    log "node did not become idle within 60 s (state '$state')"
    tail -n 15 "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" 2>/dev/null >&2
    stop
    return 1
}

stop_pid() {
    local pid="$1" name="$2"
    alive "$pid" || return 0
    # Only signal a process that still is what we started (PIDs get recycled).
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] || return 0
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 150); do
        alive "$pid" || break
        sleep 0.1
    done
    if alive "$pid"; then
        log "$name ($pid) ignored SIGTERM for 15 s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null
    return 0
}

stop() {
    need_root
    if [ ! -s "$PIDS" ]; then
        log "nothing recorded in $PIDS; nothing to stop"
        return 0
    fi
    if command -v squeue >/dev/null && sinfo >/dev/null 2>&1; then
        local ids
        ids="$(squeue -h -o %i 2>/dev/null)"
        if [ -n "$ids" ]; then
            log "cancelling $(echo "$ids" | wc -l) job(s)"
            scancel --full $(squeue -h -o %A 2>/dev/null | sort -u) 2>/dev/null
            for _ in $(seq 1 120); do
                [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break
                sleep 0.25
            done
        fi
    fi
    local ours_munge=0
    grep -q ' munged$' "$PIDS" && ours_munge=1
    for name in slurmd slurmctld munged; do
        while read -r pid n; do
            [ "$n" = "$name" ] && stop_pid "$pid" "$n"
        done <"$PIDS"
    done
    : >"$PIDS"
    # Orphaned daemons show as zombies until PID 1 reaps them; wait a little for that.
    local left=""
    for _ in $(seq 1 40); do
        left="$(leftovers "$ours_munge")"
        [ -z "$left" ] && break
        sleep 0.1
    done
    if [ -n "$left" ]; then
        log "still running after stop: $left"
        return 1
    fi
    log "stopped"
    return 0
}

# Slurm processes still alive (zombies excluded), as "name(pid)"; munged too when $1 = 1 (we had started it: a munged
# that answered before start is not ours and stays).
leftovers() {
    local with_munge="$1" out="" pid comm
    for p in /proc/[0-9]*; do
        pid="${p#/proc/}"
        comm="$(cat "$p/comm" 2>/dev/null)" || continue
        case "$comm" in
            slurmctld | slurmd | slurmstepd) alive "$pid" && out="$out $comm($pid)" ;;
            munged) [ "$with_munge" = 1 ] && alive "$pid" && out="$out $comm($pid)" ;;
        esac
    done
    echo "${out# }"
}

status() {
    echo "state directory: $DIR"
    if [ -s "$PIDS" ]; then
        while read -r pid name; do
            if alive "$pid"; then echo "  $name pid $pid: running"; else echo "  $name pid $pid: gone"; fi
        done <"$PIDS"
    else
        echo "  no daemons recorded"
    fi
    if command -v sinfo >/dev/null && sinfo >/dev/null 2>&1; then
        sinfo
        squeue
        return 0
    fi
    echo "  Slurm is not answering"
    return 1
}

# --- selftest ----------------------------------------------------------------------------------------------------
selftest() {
    need_root
    local pass=0 fail=0 tmp
    check() {
        local what="$1"
        shift
        if "$@"; then
            pass=$((pass + 1))
            echo "ok   $what"
        else
            fail=$((fail + 1))
            echo "FAIL $what"
        fi
    }
    start || { echo "selftest: start failed"; return 1; }
    tmp="$(mktemp -d /tmp/slurm_local_selftest.XXXXXX)"
    chmod 777 "$tmp"
    array_job() {
        sbatch --wait -Q --array=0-2 -o "$tmp/arr_%a.out" --wrap 'echo task $SLURM_ARRAY_TASK_ID' >/dev/null 2>&1 \
            && for i in 0 1 2; do grep -qx "task $i" "$tmp/arr_$i.out" || return 1; done
    }
    check "job array writes 3 files" array_job
    check "srun -n1 hostname" bash -c "[ \"\$(srun -n1 hostname 2>/dev/null)\" = \"$(hostname)\" ]"
    check "srun -n2" bash -c '[ "$(srun -n2 hostname 2>/dev/null | wc -l)" = 2 ]'
    check "sbatch --wait exits 0" bash -c "sbatch --wait -Q -o /dev/null --wrap true >/dev/null 2>&1"
    exit3() {
        sbatch --wait -Q -o /dev/null --wrap 'exit 3' >/dev/null 2>&1
        [ $? = 3 ]
    }
    check "sbatch --wait exits 3 when the job does" exit3
    check "jobcomp.txt records exit code 3" bash -c "sleep 1; grep -q 'ExitCode=3:0' '$DIR/jobcomp.txt'"
    nobody_job() {
        su -s /bin/bash nobody -c "cd /tmp && sbatch --wait -Q -o '$tmp/who.out' --wrap whoami" >/dev/null 2>&1 \
            && grep -qx nobody "$tmp/who.out"
    }
    check "a job submitted by nobody runs as nobody" nobody_job
    check "a sleep 600 job is left running for stop" bash -c "sbatch -Q -o /dev/null --wrap 'sleep 600' >/dev/null 2>&1 && sleep 1 && [ -n \"\$(squeue -h -o %i)\" ]"
    check "stop leaves nothing behind" stop
    rm -rf "$tmp"
    echo "selftest: $pass passed, $fail failed"
    [ "$fail" = 0 ]
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    selftest) selftest ;;
    *)
        echo "usage: $0 start|stop|status|selftest" >&2
        exit 2
        ;;
esac
