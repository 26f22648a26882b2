#!/usr/bin/env bash
# Stop the lab Asterisk of instance PBXLAB_OFFSET (default 0) by its pid:
# "core stop now" over the control socket, then SIGTERM, then SIGKILL.
# PBXLAB_STOP_KILL=1 sends SIGKILL at once instead (a crash, for fault tests).
# The chroot's bind mounts are released once no instance runs any more
# (PBXLAB_KEEP_MOUNTS=1 keeps them).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lab-lib.sh"
need_root

wait_gone() {  # pid, tenths of a second
    local i
    for i in $(seq 1 "$2"); do pid_alive "$1" || return 0; sleep 0.1; done
    ! pid_alive "$1"
}

if [ "${PBXLAB_STOP_KILL:-0}" = 1 ] && pid="$(asterisk_pid)"; then
    log "killing asterisk pid $pid (SIGKILL)"
    kill -KILL "$pid" 2>/dev/null || true
    wait_gone "$pid" 50 || die "pid $pid survived SIGKILL"
    log "killed"
elif pid="$(asterisk_pid)"; then
    log "stopping asterisk pid $pid"
    timeout 5 chroot "$SID_ROOT" /usr/sbin/asterisk -C "$CONF_DST/asterisk.conf" \
        -rx "core stop now" >/dev/null 2>&1 || true
    if ! wait_gone "$pid" 50; then
        log "still running; SIGTERM"
        kill -TERM "$pid" 2>/dev/null || true
        if ! wait_gone "$pid" 30; then
            log "still running; SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            wait_gone "$pid" 20 || die "pid $pid survived SIGKILL"
        fi
    fi
    log "stopped"
else
    log "not running"
fi
rm -f "$PID_FILE" "$STATE_DIR/instance.json"

if [ "${PBXLAB_KEEP_MOUNTS:-0}" != 1 ]; then
    exec 9>"$LOCK_FILE"
    flock 9
    any_instance_running || release_mounts "$SID_ROOT"
fi
