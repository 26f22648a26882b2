#!/usr/bin/env bash
# Install the Debian packages a part of pbxlink needs on the host, once.
#   host-packages.sh python   - python3-venv (to create the virtualenv)
#   host-packages.sh systemd  - systemd-analyze (to verify the unit file)
#   host-packages.sh lab      - mosquitto, sip-tester (sipp), mmdebstrap
#   host-packages.sh mail     - dovecot-imapd (the real IMAP server of the gateway's e-mail tests)
set -euo pipefail
want=()
for part in "$@"; do
    case "$part" in
        python)  python3 -c 'import venv, ensurepip' 2>/dev/null || want+=(python3-venv) ;;
        systemd) command -v systemd-analyze >/dev/null || want+=(systemd) ;;
        lab)     command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || want+=(mosquitto)
                 command -v sipp >/dev/null || want+=(sip-tester)
                 command -v mmdebstrap >/dev/null || want+=(mmdebstrap) ;;
        mail)    [ -x /usr/sbin/dovecot ] || want+=(dovecot-imapd)
                 command -v openssl >/dev/null || want+=(openssl) ;;
        *) echo "host-packages.sh: unknown part $part" >&2; exit 2 ;;
    esac
done
[ ${#want[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "host-packages.sh: need root to install: ${want[*]}" >&2; exit 1
fi
echo "installing Debian packages: ${want[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q --no-install-recommends "${want[@]}" >/dev/null 2>&1 || {
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${want[@]}" >/dev/null
}
