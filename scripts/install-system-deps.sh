#!/bin/sh
# Installs the Debian packages the project's tests and features use, only
# when they are missing.  Each line of NEEDS is "<probe path> <package>":
# the package is installed when the probe path does not exist.  Add a line
# here when a feature starts using a new system component; never rely on
# what a given machine happens to have.
set -eu

NEEDS="
/usr/bin/pgrep procps
/usr/bin/carbon-cache graphite-carbon
/usr/lib/python3/dist-packages/whisper.py python3-whisper
/usr/sbin/haproxy haproxy
/usr/bin/wrk wrk
"

missing=""
echo "$NEEDS" | while read -r probe pkg; do
    [ -n "$probe" ] || continue
    [ -e "$probe" ] || echo "$pkg"
done > /tmp/marathon-missing-pkgs.$$
missing=$(sort -u /tmp/marathon-missing-pkgs.$$ | tr '\n' ' ')
rm -f /tmp/marathon-missing-pkgs.$$

if [ -z "$(echo "$missing" | tr -d ' ')" ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "install-system-deps: missing Debian packages: $missing (run as root to install)" >&2
    exit 1
fi
echo "install-system-deps: installing $missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing
