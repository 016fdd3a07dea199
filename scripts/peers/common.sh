# shellcheck shell=bash
# shellcheck disable=SC2154,SC2034  # script_name, python, SETTLE_MAX in; watchdog_pid out
# Helpers shared by the peer scripts (zipf.sh, c32.sh, check.sh): ports, MLServer's model settings, readiness, process trees and
# their CPU time, and waiting for idle CPUs. Sourced, not run. The sourcing script sets
# `script_name` (for messages), `python` (an interpreter with the standard library) and
# `SETTLE_MAX` (seconds `settle` may wait).

start_time_of() { # PID -> the process's start time (field 22 of /proc/PID/stat), or nothing
    awk '{ sub(/^.*\) /, ""); print $20 }' "/proc/$1/stat" 2>/dev/null || true
}

wait_gone() { # PID SECONDS
    local deadline=$((SECONDS + $2))
    while kill -0 "$1" 2>/dev/null && [ $SECONDS -lt "$deadline" ]; do sleep 0.2; done
    ! kill -0 "$1" 2>/dev/null
}

free_port() {
    "$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

mlserver_model_settings() { # FILE MODEL_PATH MAX_BATCH_SIZE MAX_BATCH_TIME_S
    # MLServer reports no tensors unless they are declared here, and Tollgate needs them.
    cat >"$1" <<JSON
{
  "name": "digits",
  "implementation": "mlserver_runtime.DigitsRuntime",
  "max_batch_size": $3,
  "max_batch_time": $4,
  "parameters": {"uri": "$2"},
  "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}],
  "outputs": [
    {"name": "label", "datatype": "INT64", "shape": [-1]},
    {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}
  ]
}
JSON
}

wait_http() { # URL SECONDS PID LOG
    local deadline=$((SECONDS + $2))
    until curl -sf -o /dev/null "$1"; do
        if ! kill -0 "$3" 2>/dev/null || [ $SECONDS -ge "$deadline" ]; then
            echo "$script_name: $1 did not come up; the log:" >&2
            tail -40 "$4" >&2
            return 1
        fi
        sleep 0.3
    done
}

fetch() { # URL FILE [CURL ARGS...]
    local url=$1 file=$2
    shift 2
    curl -sSf --max-time 10 "$@" -o "$file" "$url" || {
        echo "$script_name: could not read $url" >&2
        return 1
    }
}

descendants() { # ROOT_PID... -> the pids of every process below them
    awk -v roots="$*" '
        { pid = FILENAME; sub(/^\/proc\//, "", pid); sub(/\/stat$/, "", pid)
          sub(/^.*\) /, ""); parent[pid] = $2 }
        END {
            n = split(roots, r, " "); for (i = 1; i <= n; i++) keep[r[i]] = 1
            do { added = 0
                 for (p in parent) if (!(p in keep) && (parent[p] in keep)) { keep[p] = 1; added = 1 }
            } while (added)
            for (i = 1; i <= n; i++) delete keep[r[i]]
            for (p in keep) print p
        }' /proc/[0-9]*/stat 2>/dev/null
}

tree_cpu_ticks() { # ROOT_PID... -> utime + stime of the roots and everything below them
    local pids
    pids="$* $(descendants "$@" | tr '\n' ' ')"
    for pid in $pids; do cat "/proc/$pid/stat" 2>/dev/null || true; done |
        awk '{ sub(/^.*\) /, ""); t += $12 + $13 } END { print t + 0 }'
}

machine_ticks() { # busy and total ticks of all CPUs
    awk '/^cpu / { total = 0; for (i = 2; i <= NF; i++) total += $i
                   print total - $5 - $6, total }' /proc/stat
}

cpu_idle_percent() {
    local a b
    a=$(machine_ticks); sleep 1; b=$(machine_ticks)
    echo "$a $b" | awk '{ d = $4 - $2; printf "%d\n", (d > 0 ? 100 - 100 * ($3 - $1) / d : 100) }'
}

settle() { # wait (bounded) until the CPUs are mostly idle
    local deadline=$((SECONDS + SETTLE_MAX)) idle
    idle=$(cpu_idle_percent)
    while [ "$idle" -lt 85 ] && [ $SECONDS -lt "$deadline" ]; do idle=$(cpu_idle_percent); done
    [ "$idle" -lt 85 ] && echo "  (machine still busy before the run: ${idle}% idle)"
    return 0
}

start_watchdog() { # SECONDS: TERM this script after SECONDS; sets watchdog_pid (kill it on exit)
    # The watchdog stops its own sleep when it is stopped, so nothing is left behind.
    ( trap 'kill "$sleeper" 2>/dev/null; exit 0' TERM
      sleep "$1" & sleeper=$!
      wait "$sleeper" && kill -TERM $$ 2>/dev/null ) &
    watchdog_pid=$!
}

kill_strays() { # "PID:STARTTIME"...: KILL each that is still that same process
    local entry pid
    for entry in "$@"; do
        pid=${entry%%:*}
        if [ "$(start_time_of "$pid")" = "${entry#*:}" ]; then
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
}

remove_new_workspaces() { # CACHE_DIR LISTING_BEFORE: pytriton copies Triton into a fresh
    # workspace per run; remove the ones this run made.
    local workspace
    for workspace in $(ls "$1" 2>/dev/null || true); do
        grep -qx "$workspace" <<<"$2" || rm -rf "${1:?}/$workspace"
    done
}
