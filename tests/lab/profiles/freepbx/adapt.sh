# shellcheck shell=bash
# Sourced by asterisk-start.sh with $dst = the instance's fresh config dir (the lab's files
# with this profile's files laid over them); then deleted from $dst.  Changes the lab's own
# files where the profile differs only in a few lines, so the profile follows the lab's
# pjsip.conf and modules.conf as they change.

# agents' phones in FreePBX's from-internal, the trunk in from-pstn
sed -i -e 's/^context = from-agents$/context = from-internal/' \
       -e 's/^context = from-trunk$/context = from-pstn/' "$dst/pjsip.conf"
grep -q '^context = from-internal$' "$dst/pjsip.conf" || die "freepbx profile: no agent context in pjsip.conf"

# what a FreePBX dialplan uses beyond the lab's modules
cat >> "$dst/modules.conf" <<'MODULES'

; FreePBX profile: conferences, parking, supervisor spy/whisper, loops, tones
load => app_confbridge.so
load => res_parking.so
load => app_chanspy.so
load => app_while.so
load => app_playtones.so
MODULES
