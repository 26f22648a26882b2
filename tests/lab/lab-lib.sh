# shellcheck shell=bash disable=SC2034
# Settings and helpers shared by asterisk-setup.sh, asterisk-start.sh and
# asterisk-stop.sh.  Sourced, never executed.  Every value can be overridden
# from the environment.
#
# Instances: PBXLAB_OFFSET=N (0..39) selects instance N.  Every port of the
# instance lives in its own block (see "ports" below), and the instance has its
# own config, astdb, spool, log and run directories inside the chroot and its
# own state directory (pid file, console log, instance.json) on the host, so
# several instances run side by side from ONE cached root.

LAB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$LAB_DIR/../.." && pwd)"

# The cached Debian sid root with Asterisk 22 (fixed path, shared by instances).
SID_ROOT="${PBXLAB_SID_ROOT:-/var/cache/pbxlink/asterisk-sid}"
SID_STAMP="$SID_ROOT/.pbxlab-stamp"
SID_PACKAGES="asterisk asterisk-modules asterisk-config asterisk-core-sounds-en asterisk-core-sounds-en-gsm procps"
SID_STAMP_WANT="pbxlab v1 packages: $SID_PACKAGES"

OFFSET="${PBXLAB_OFFSET:-0}"
case "$OFFSET" in
    ''|*[!0-9]*) echo "[pbxlab] ERROR: PBXLAB_OFFSET must be an integer 0..39, got '$OFFSET'" >&2; exit 2 ;;
esac
if [ "$OFFSET" -gt 39 ]; then
    echo "[pbxlab] ERROR: PBXLAB_OFFSET must be 0..39, got $OFFSET" >&2; exit 2
fi
INSTANCE="pbxlab-$OFFSET"

# ---- ports (all on 127.0.0.1) ---------------------------------------------
# Instance N owns the TCP/UDP block 15000+N*100 .. +99 and the RTP block
# 20000+N*1000 .. +999 (Asterisk uses +0..+799, SIPp media +800..+999).
PORT_BASE=$((15000 + OFFSET * 100))
AMI_PORT="${PBXLAB_AMI_PORT:-$((PORT_BASE + 38))}"
SIP_PORT="${PBXLAB_SIP_PORT:-$((PORT_BASE + 60))}"
AGI_PORT="${PBXLAB_AGI_PORT:-$((PORT_BASE + 73))}"
TRUNK_PORT="${PBXLAB_TRUNK_PORT:-$((PORT_BASE + 90))}"
MQTT_PORT="${PBXLAB_MQTT_PORT:-$((PORT_BASE + 83))}"
AGENT_PORT_101=$((PORT_BASE + 1))
AGENT_PORT_102=$((PORT_BASE + 2))
AGENT_PORT_103=$((PORT_BASE + 3))
RTP_START=$((20000 + OFFSET * 1000))
RTP_END=$((RTP_START + 799))

# ---- dialplan timings (seconds), short on purpose: scenarios finish fast ----
AGENT_RING_TIMEOUT="${PBXLAB_AGENT_RING_TIMEOUT:-6}"    # responsible agent rings
QUEUE_TIMEOUT="${PBXLAB_QUEUE_TIMEOUT:-8}"              # whole time in a queue
QUEUE_MEMBER_TIMEOUT="${PBXLAB_QUEUE_MEMBER_TIMEOUT:-4}" # one ring round of a queue
QUEUE_RETRY="${PBXLAB_QUEUE_RETRY:-1}"                  # pause between rounds
INTERNAL_RING_TIMEOUT="${PBXLAB_INTERNAL_RING_TIMEOUT:-8}"
OUTBOUND_RING_TIMEOUT="${PBXLAB_OUTBOUND_RING_TIMEOUT:-20}"
IVR_WAIT="${PBXLAB_IVR_WAIT:-3}"                        # WaitExten after the menu
GREETING="${PBXLAB_GREETING:-beep}"                     # prompt played after Answer
ATXFER_NOANSWER_TIMEOUT="${PBXLAB_ATXFER_NOANSWER_TIMEOUT:-5}"  # consultation ring of an attended transfer

# ---- AMI credentials ---------------------------------------------------------
AMI_USER="${PBXLAB_AMI_USER:-pbxlink}"
AMI_SECRET="${PBXLAB_AMI_SECRET:-lab-ami-7f3c9e}"

# ---- dialplan profile ----------------------------------------------------------
# "lab": the lab's own hand-written dialplan (tests/lab/asterisk).  "freepbx": the
# same PBX with the files of tests/lab/profiles/freepbx laid over it (a dialplan
# written the way FreePBX generates one; see docs/lab.md).
PROFILE="${PBXLAB_PROFILE:-lab}"
case "$PROFILE" in
    lab|freepbx) ;;
    *) echo "[pbxlab] ERROR: PBXLAB_PROFILE must be lab or freepbx, got '$PROFILE'" >&2; exit 2 ;;
esac

# ---- directories -------------------------------------------------------------
CONF_SRC="${PBXLAB_CONF_SRC:-$LAB_DIR/asterisk}"
PROFILE_DIR="$LAB_DIR/profiles/$PROFILE"
FREEPBX_SNIPPET="$REPO_DIR/config/asterisk/pbxlink-freepbx.conf"
ROUTING_SNIPPET="${PBXLAB_ROUTING_SNIPPET:-$REPO_DIR/config/asterisk/pbxlink-routing.conf}"
# inside the chroot (paths relative to the root)
CONF_DST="/etc/$INSTANCE"
IN_DIRS="/var/lib/$INSTANCE /var/spool/$INSTANCE /var/log/$INSTANCE /var/run/$INSTANCE"
# on the host
STATE_DIR="${PBXLAB_STATE_DIR:-/run/pbxlab/$OFFSET}"
PID_FILE="$STATE_DIR/asterisk.pid"
LOCK_FILE=/run/pbxlab.lock

START_TIMEOUT="${PBXLAB_START_TIMEOUT:-60}"

log() { printf '[pbxlab %s] %s\n' "$OFFSET" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
need_root() { [ "$(id -u)" = 0 ] || die "must run as root (chroot and bind mounts need it)"; }

# Debian mirror, read at run time from the host's apt sources (never stored).
debian_mirror() {
    if [ -n "${PBXLAB_MIRROR:-}" ]; then echo "${PBXLAB_MIRROR%/}"; return; fi
    local f u=""
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -r "$f" ] || continue
        u="$(awk 'tolower($1)=="uris:" && $2 !~ /security/ {print $2; exit}' "$f")"
        [ -n "$u" ] && break
    done
    if [ -z "$u" ] && [ -r /etc/apt/sources.list ]; then
        u="$(awk '$1=="deb" {for(i=2;i<=NF;i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' \
             /etc/apt/sources.list | grep -v security | head -n1 || true)"
    fi
    [ -n "$u" ] || die "cannot find a Debian mirror in /etc/apt (set PBXLAB_MIRROR)"
    echo "${u%/}"
}

# No DNS is needed inside the root; keep any lookup on loopback.
pin_resolv_conf() {
    local root="$1"
    rm -f "$root/etc/resolv.conf"
    printf '# pbxlab: no DNS needed; keep lookups on loopback\nnameserver 127.0.0.1\n' \
        > "$root/etc/resolv.conf"
}

# Bind mounts shared by all instances (idempotent).
ensure_mounts() {
    local root="$1" m
    for m in proc dev dev/pts; do
        # /dev/pts is a nicety (Asterisk runs without a console); skip it if the host has none
        [ "$m" = dev/pts ] && ! mountpoint -q /dev/pts && continue
        mkdir -p "$root/$m"
        mountpoint -q "$root/$m" && continue
        case "$m" in
            proc) mount -t proc proc "$root/proc" ;;
            *)    mount --bind "/$m" "$root/$m" ;;
        esac
    done
}
release_mounts() {
    local root="$1" m
    for m in dev/pts dev proc; do
        if mountpoint -q "$root/$m"; then
            umount "$root/$m" 2>/dev/null || umount -l "$root/$m"
        fi
    done
}

pid_alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }

asterisk_pid() {
    local p
    [ -r "$PID_FILE" ] || return 1
    p="$(cat "$PID_FILE")"
    pid_alive "$p" || return 1
    # the pid must still be an asterisk (pids get reused)
    [ "$(cat "/proc/$p/comm" 2>/dev/null)" = asterisk ] || return 1
    echo "$p"
}

# Any instance of this lab still running from the root $1 (default: SID_ROOT)?
any_instance_running() {
    local root="${1:-$SID_ROOT}" f p
    for f in /run/pbxlab/*/asterisk.pid "${PBXLAB_STATE_DIR:-/nonexistent}/asterisk.pid"; do
        [ -r "$f" ] || continue
        p="$(cat "$f")"
        pid_alive "$p" && [ "$(cat "/proc/$p/comm" 2>/dev/null)" = asterisk ] \
            && [ "$(readlink "/proc/$p/root")" = "$(readlink -f "$root")" ] && return 0
    done
    return 1
}

# Is AMI up and has Asterisk finished booting?  Logs in, waits for FullyBooted.
ami_ready() {
    python3 - "$AMI_PORT" "$AMI_USER" "$AMI_SECRET" <<'PY'
import socket, sys, time
port, user, secret = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ok = False
try:
    s = socket.create_connection(("127.0.0.1", port), timeout=2)
    s.settimeout(2)
    buf = s.recv(200)
    if buf.startswith(b"Asterisk Call Manager"):
        s.sendall(b"Action: Login\r\nUsername: %s\r\nSecret: %s\r\nEvents: system\r\n\r\n"
                  % (user.encode(), secret.encode()))
        deadline = time.time() + 2
        while time.time() < deadline and b"Event: FullyBooted" not in buf:
            if b"Response: Error" in buf:
                sys.exit(2)
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
        ok = b"Event: FullyBooted" in buf
        try:
            s.sendall(b"Action: Logoff\r\n\r\n")
        except OSError:
            pass
    s.close()
except OSError:
    ok = False
sys.exit(0 if ok else 1)
PY
}
