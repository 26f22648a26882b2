#!/usr/bin/env bash
# Build (once) the cached Debian sid root with Asterisk 22 that the lab runs in.
#
#   sudo tests/lab/asterisk-setup.sh          # idempotent; a second run returns at once
#   PBXLAB_SETUP_FORCE=1 tests/lab/asterisk-setup.sh   # rebuild from scratch
#   tests/lab/asterisk-setup.sh --host-tools            # only the host packages
#
# Bookworm has no Asterisk, and installing sid packages on the host would
# upgrade libc and hundreds of packages, so Asterisk lives in a sid root built
# by mmdebstrap at /var/cache/pbxlink/asterisk-sid and runs under chroot (it
# shares the host's loopback).  The host gets only mmdebstrap, sip-tester
# (SIPp) and mosquitto from bookworm.  The Debian mirror is read from the
# host's apt sources at run time; it is never written into the repository.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lab-lib.sh"
need_root

# ---- host tools ---------------------------------------------------------------
host_pkgs=""
command -v mmdebstrap >/dev/null || host_pkgs="$host_pkgs mmdebstrap"
command -v sipp >/dev/null || host_pkgs="$host_pkgs sip-tester"
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || host_pkgs="$host_pkgs mosquitto"
if [ -n "$host_pkgs" ]; then
    log "installing host packages:$host_pkgs"
    export DEBIAN_FRONTEND=noninteractive
    # shellcheck disable=SC2086
    if ! apt-get install -y -q $host_pkgs >/dev/null 2>&1; then
        log "install failed; running apt-get update and retrying"
        apt-get update -q >/dev/null
        # shellcheck disable=SC2086
        apt-get install -y -q $host_pkgs >/dev/null
    fi
fi
# The Debian mosquitto package enables a system broker on 1883; the lab never
# uses or touches it (it runs its own brokers on other ports).
if [ "${1:-}" = "--host-tools" ]; then
    exit 0
fi

stamp_ok() {
    [ -x "$SID_ROOT/usr/sbin/asterisk" ] && [ -r "$SID_STAMP" ] \
        && [ "$(cat "$SID_STAMP")" = "$SID_STAMP_WANT" ]
}

if [ "${PBXLAB_SETUP_FORCE:-0}" != 1 ] && stamp_ok; then
    log "sid root ready at $SID_ROOT"
    exit 0
fi

# ---- build (one builder at a time) -------------------------------------------
mkdir -p "$(dirname "$SID_ROOT")"
exec 9>"$(dirname "$SID_ROOT")/.setup.lock"
flock 9
if [ "${PBXLAB_SETUP_FORCE:-0}" != 1 ] && stamp_ok; then
    log "sid root ready at $SID_ROOT (built by a concurrent setup)"
    exit 0
fi
if any_instance_running; then
    die "a lab Asterisk is running from $SID_ROOT; stop it (asterisk-stop.sh) before rebuilding"
fi

MIRROR="$(debian_mirror)"
NEW="$SID_ROOT.new"
if [ -e "$NEW" ]; then
    release_mounts "$NEW"
    rm -rf --one-file-system "$NEW"
fi

include="$(echo "$SID_PACKAGES" | tr ' ' ',')"
log "bootstrapping Debian sid into $NEW ($SID_PACKAGES)"
t0=$(date +%s)
mmdebstrap \
    --variant=apt \
    --mode=root \
    --format=directory \
    --include="$include" \
    --aptopt='APT::Install-Recommends "false"' \
    --aptopt='Acquire::Retries "3"' \
    --aptopt='Acquire::Check-Valid-Until "false"' \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    sid "$NEW" \
    "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $MIRROR sid main"
log "bootstrap took $(( $(date +%s) - t0 )) s"

version="$(chroot "$NEW" /usr/sbin/asterisk -V)" || die "asterisk does not run in $NEW"
case "$version" in
    "Asterisk 22."*) ;;
    *) die "expected Asterisk 22 in sid, got: $version" ;;
esac
pin_resolv_conf "$NEW"

if [ -e "$SID_ROOT" ]; then
    release_mounts "$SID_ROOT"
    rm -rf --one-file-system "$SID_ROOT"
fi
mv "$NEW" "$SID_ROOT"
echo "$SID_STAMP_WANT" > "$SID_STAMP"
log "ready: $version, $(du -sh --one-file-system "$SID_ROOT" | cut -f1) at $SID_ROOT"
