#!/usr/bin/env bash
# Start one lab Asterisk (instance PBXLAB_OFFSET, default 0) inside the cached
# sid root and wait until AMI answers and Asterisk reports FullyBooted.
#
#   sudo tests/lab/asterisk-start.sh                 # instance 0: AMI 15038, SIP 15060
#   sudo PBXLAB_OFFSET=3 tests/lab/asterisk-start.sh # instance 3: AMI 15338, SIP 15360
#
# Every start gets a fresh copy of tests/lab/asterisk/ (+ the routing snippet
# config/asterisk/pbxlink-routing.conf) in /etc/pbxlab-N inside the root, and
# fresh astdb/spool/log/run directories.  The host state directory
# (/run/pbxlab/N) holds asterisk.pid, console.log and instance.json (ports,
# pid, paths: what the Python driver reads).  Prints instance.json on stdout.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lab-lib.sh"
need_root

if ! [ -x "$SID_ROOT/usr/sbin/asterisk" ] || ! [ -r "$SID_STAMP" ]; then
    log "no sid root at $SID_ROOT yet: running asterisk-setup.sh (about a minute)"
    "$LAB_DIR/asterisk-setup.sh" || die "asterisk-setup.sh failed"
fi
[ -d "$CONF_SRC" ] || die "config dir $CONF_SRC not found"
[ -r "$ROUTING_SNIPPET" ] || die "routing snippet $ROUTING_SNIPPET not found"
mkdir -p "$STATE_DIR"

if pid="$(asterisk_pid)"; then
    if ami_ready; then
        log "already running (pid $pid)"
        cat "$STATE_DIR/instance.json"
        exit 0
    fi
    die "instance running (pid $pid) but AMI on 127.0.0.1:$AMI_PORT does not answer; run asterisk-stop.sh"
fi
if ami_ready; then
    die "something not started by this script already answers AMI on 127.0.0.1:$AMI_PORT"
fi

t0=$(date +%s%N)
exec 9>"$LOCK_FILE"
flock 9
pin_resolv_conf "$SID_ROOT"
ensure_mounts "$SID_ROOT"
exec 9>&-

# fresh config with the tokens filled in
dst="$SID_ROOT$CONF_DST"
rm -rf --one-file-system "$dst"
mkdir -p "$dst"
cp -a "$CONF_SRC"/. "$dst"/
cp "$ROUTING_SNIPPET" "$dst/pbxlink-routing.conf"
if [ "$PROFILE" != lab ]; then
    [ -d "$PROFILE_DIR" ] || die "profile dir $PROFILE_DIR not found"
    cp -a "$PROFILE_DIR"/. "$dst"/   # the profile's files replace the lab's
    if [ -f "$dst/adapt.sh" ]; then  # ... and it may adapt the lab's files it keeps
        # shellcheck source=/dev/null
        . "$dst/adapt.sh"
        rm -f "$dst/adapt.sh"
    fi
    [ -r "$FREEPBX_SNIPPET" ] || die "routing snippet $FREEPBX_SNIPPET not found"
    cp "$FREEPBX_SNIPPET" "$dst/pbxlink-freepbx.conf"
fi
find "$dst" -type f -print0 | xargs -0 sed -i \
    -e "s|@INSTANCE@|$INSTANCE|g" \
    -e "s|@AMI_PORT@|$AMI_PORT|g" \
    -e "s|@AMI_USER@|$AMI_USER|g" \
    -e "s|@AMI_SECRET@|$AMI_SECRET|g" \
    -e "s|@SIP_PORT@|$SIP_PORT|g" \
    -e "s|@TRUNK_PORT@|$TRUNK_PORT|g" \
    -e "s|@AGI_PORT@|$AGI_PORT|g" \
    -e "s|@RTP_START@|$RTP_START|g" \
    -e "s|@RTP_END@|$RTP_END|g" \
    -e "s|@AGENT_PORT_101@|$AGENT_PORT_101|g" \
    -e "s|@AGENT_PORT_102@|$AGENT_PORT_102|g" \
    -e "s|@AGENT_PORT_103@|$AGENT_PORT_103|g" \
    -e "s|@AGENT_RING_TIMEOUT@|$AGENT_RING_TIMEOUT|g" \
    -e "s|@QUEUE_TIMEOUT@|$QUEUE_TIMEOUT|g" \
    -e "s|@QUEUE_MEMBER_TIMEOUT@|$QUEUE_MEMBER_TIMEOUT|g" \
    -e "s|@QUEUE_RETRY@|$QUEUE_RETRY|g" \
    -e "s|@INTERNAL_RING_TIMEOUT@|$INTERNAL_RING_TIMEOUT|g" \
    -e "s|@OUTBOUND_RING_TIMEOUT@|$OUTBOUND_RING_TIMEOUT|g" \
    -e "s|@ATXFER_NOANSWER_TIMEOUT@|$ATXFER_NOANSWER_TIMEOUT|g" \
    -e "s|@IVR_WAIT@|$IVR_WAIT|g" \
    -e "s|@GREETING@|$GREETING|g"
if left="$(grep -rho '@[A-Z_0-9]*@' "$dst" | sort -u | tr '\n' ' ')" && [ -n "$left" ]; then
    die "unfilled config tokens: $left"
fi

# fresh runtime state on every start: reproducible scenarios
for d in $IN_DIRS; do
    rm -rf --one-file-system "${SID_ROOT:?}$d"
    mkdir -p "$SID_ROOT$d"
done
mkdir -p "$SID_ROOT/var/spool/$INSTANCE/voicemail"
# The CEL database of cel_sqlite3_custom in WAL mode before Asterisk first opens it (the mode is
# kept in the file): Asterisk writes every CEL record in its own transaction from the one thread
# that also sends CEL over AMI, and with the default rollback journal those fsyncs delayed
# LINKEDID_END by up to seconds at 20 calls/s (docs/cel.md).
python3 -c 'import sqlite3, sys; sqlite3.connect(sys.argv[1]).execute("PRAGMA journal_mode=WAL").fetchone()' \
    "$SID_ROOT/var/log/$INSTANCE/pbxlink-cel.db"

# -f: foreground, no console.  setsid and chroot exec, so $! is asterisk itself.
setsid chroot "$SID_ROOT" /usr/sbin/asterisk -f -C "$CONF_DST/asterisk.conf" \
    </dev/null >"$STATE_DIR/console.log" 2>&1 &
pid=$!
echo "$pid" > "$PID_FILE"

deadline=$(( $(date +%s) + START_TIMEOUT ))
until ami_ready; do
    if ! pid_alive "$pid"; then
        tail -n 30 "$STATE_DIR/console.log" >&2 || true
        rm -f "$PID_FILE"
        die "asterisk exited during startup (see $STATE_DIR/console.log)"
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
        die "AMI not ready within ${START_TIMEOUT}s (pid $pid still running; asterisk-stop.sh stops it)"
    fi
    sleep 0.1
done
ms=$(( ($(date +%s%N) - t0) / 1000000 ))

cat > "$STATE_DIR/instance.json.tmp" <<JSON
{
  "offset": $OFFSET,
  "profile": "$PROFILE",
  "instance": "$INSTANCE",
  "pid": $pid,
  "started_in_ms": $ms,
  "host": "127.0.0.1",
  "ami_port": $AMI_PORT,
  "ami_user": "$AMI_USER",
  "ami_secret": "$AMI_SECRET",
  "sip_port": $SIP_PORT,
  "agi_port": $AGI_PORT,
  "trunk_port": $TRUNK_PORT,
  "mqtt_port": $MQTT_PORT,
  "agent_ports": {"101": $AGENT_PORT_101, "102": $AGENT_PORT_102, "103": $AGENT_PORT_103},
  "rtp_start": $RTP_START,
  "rtp_end": $RTP_END,
  "sipp_media_base": $((RTP_START + 800)),
  "sipp_local_base": $((PORT_BASE + 10)),
  "timings": {"agent_ring_timeout": $AGENT_RING_TIMEOUT, "queue_timeout": $QUEUE_TIMEOUT,
              "queue_member_timeout": $QUEUE_MEMBER_TIMEOUT, "queue_retry": $QUEUE_RETRY,
              "internal_ring_timeout": $INTERNAL_RING_TIMEOUT,
              "outbound_ring_timeout": $OUTBOUND_RING_TIMEOUT,
              "atxfer_noanswer_timeout": $ATXFER_NOANSWER_TIMEOUT,
              "ivr_wait": $IVR_WAIT, "greeting": "$GREETING"},
  "sid_root": "$SID_ROOT",
  "conf_dir": "$SID_ROOT$CONF_DST",
  "log_dir": "$SID_ROOT/var/log/$INSTANCE",
  "spool_dir": "$SID_ROOT/var/spool/$INSTANCE",
  "state_dir": "$STATE_DIR",
  "console_log": "$STATE_DIR/console.log"
}
JSON
mv "$STATE_DIR/instance.json.tmp" "$STATE_DIR/instance.json"
log "asterisk pid $pid (profile $PROFILE) ready in ${ms} ms: AMI 127.0.0.1:$AMI_PORT, SIP udp 127.0.0.1:$SIP_PORT"
cat "$STATE_DIR/instance.json"
