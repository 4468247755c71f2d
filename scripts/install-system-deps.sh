#!/bin/sh
# Installs the Debian packages the project's tests and features use, only
# when they are missing.  Each line of NEEDS is "<probe path> <package>":
# the package is installed when the probe path does not exist.  Add a line
# here when a feature starts using a new system component; never rely on
# what a given machine happens to have.
#
# `install-system-deps.sh build [python]` checks only what building the
# package needs (a C compiler, the interpreter's headers and venv module):
# the Makefile runs it before it creates the venv, for `make run` too.
set -eu

if [ "${1:-}" = build ]; then
    PY=${2:-python3.11}
    INCLUDE=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
    VER=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
    if "$PY" -c 'import ensurepip' 2>/dev/null; then VENV_PROBE=/; else VENV_PROBE=/nonexistent; fi
    NEEDS="
/usr/bin/gcc gcc
$INCLUDE/Python.h python$VER-dev
$VENV_PROBE python$VER-venv
"
else
    NEEDS="
/usr/bin/pgrep procps
/usr/bin/carbon-cache graphite-carbon
/usr/lib/python3/dist-packages/whisper.py python3-whisper
/usr/sbin/haproxy haproxy
/usr/bin/wrk wrk
/sbin/ip iproute2
/usr/sbin/iptables iptables
/usr/bin/java default-jre-headless
/usr/share/java/zookeeper.jar zookeeper
/usr/share/java/slf4j-simple.jar libslf4j-java
/usr/sbin/runc runc
/usr/bin/skopeo skopeo
/usr/bin/umoci umoci
/usr/bin/docker-registry docker-registry
/bin/busybox busybox-static
/usr/lib/cni/bridge containernetworking-plugins
"
fi

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
