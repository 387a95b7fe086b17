# Shared shell helpers for scripts/setup, scripts/test and scripts/install-livekit-server.
# Source it; do not run it. Each script sets EA_PREFIX (the tag in front of every line).
# shellcheck shell=bash

EA_PREFIX=${EA_PREFIX:-edgeagent}

# Where everything slow to make is kept, outside the repository.
ea_cache_dir() {
    printf '%s\n' "${EDGEAGENT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/edgeagent}"
}

ea_now() { printf '%s\n' "${EPOCHREALTIME:-$(date +%s.%N)}"; }

# Seconds (float) since a time taken with ea_now, as "4.2s" or "3m07s".
ea_since() {
    local start=$1 now
    now=$(ea_now)
    awk -v a="$start" -v b="$now" 'BEGIN {
        d = b - a; if (d < 0) d = 0
        if (d < 60) printf "%.1fs\n", d
        else printf "%dm%02ds\n", int(d / 60), int(d) % 60
    }'
}

ea_log() { printf '[%s] %s\n' "$EA_PREFIX" "$*"; }
ea_warn() { printf '[%s] WARNING: %s\n' "$EA_PREFIX" "$*" >&2; }
ea_die() {
    printf '[%s] ERROR: %s\n' "$EA_PREFIX" "$*" >&2
    exit 1
}

# ea_step TITLE FUNCTION [ARGS...]: run one step with a header and its wall time.
# Call it plainly (not after `if`, `||` or `&&`), so that `set -e` stays in force inside
# the step; a failing step ends the script and ea_exit_report names it.
EA_STEP=
ea_step() {
    local title=$1 start
    shift
    start=$(ea_now)
    EA_STEP=$title
    ea_log "==> $title"
    "$@"
    EA_STEP=
    ea_log "    done: $title ($(ea_since "$start"))"
}

# For an EXIT trap: say which step failed.
ea_exit_report() {
    local rc=$1
    if ((rc != 0)) && [[ -n $EA_STEP ]]; then
        printf '[%s] FAILED at step: %s (exit %s)\n' "$EA_PREFIX" "$EA_STEP" "$rc" >&2
    fi
}

# ea_run_logged LOGFILE WHAT CMD [ARGS...]: run a long command with its output in LOGFILE,
# print a heartbeat every 30 s (elapsed time and the log's last line), and the tail of the
# log if it fails.
ea_run_logged() {
    local log=$1 what=$2 start pid rc=0 ticks=0 last
    shift 2
    mkdir -p "$(dirname "$log")"
    start=$(ea_now)
    ea_log "    $what: running, full log in $log"
    "$@" >"$log" 2>&1 </dev/null &
    pid=$!
    while kill -0 "$pid" 2>/dev/null; do
        sleep 1
        ticks=$((ticks + 1))
        if ((ticks % 30 == 0)) && kill -0 "$pid" 2>/dev/null; then
            last=$(tail -n 1 "$log" 2>/dev/null | tr -d '\r' | cut -c1-110)
            ea_log "    ... $what: $(ea_since "$start") elapsed${last:+ | $last}"
        fi
    done
    wait "$pid" || rc=$?
    if ((rc != 0)); then
        ea_log "    $what failed (exit $rc) after $(ea_since "$start"); last lines of $log:"
        tail -n 40 "$log" | sed "s/^/[$EA_PREFIX]  | /" >&2
        return "$rc"
    fi
    ea_log "    $what: finished in $(ea_since "$start")"
}

# A short key for "this kind of CPU": the first 12 hex digits of the sha256 of the
# machine name and the first 'model name', 'flags' and 'Features' lines of /proc/cpuinfo.
ea_cpu_key() {
    {
        uname -m
        if [[ -r /proc/cpuinfo ]]; then
            local field
            for field in 'model name' 'flags' 'Features'; do
                grep -m1 "^${field}[[:space:]]*:" /proc/cpuinfo || true
            done
        fi
    } | sha256sum | cut -c1-12
}

# Owner (user name) of a path.
ea_owner() { stat -c %U "$1"; }
