#!/usr/bin/env bash
# Install Debian's Orthanc, its DICOMweb plugin, nginx and openssl, idempotently and without
# leaving a system-wide Orthanc or nginx running. The test suite starts its own
# instances: Orthanc on loopback, and nginx as a TLS front for the HTTPS tests
# (tests/support/tls.py); `openssl s_server` renegotiates for a TLS test (test_wire.py).
set -euo pipefail
# The tests run this script against a scratch folder standing for / (system paths only).
root=${INSTALL_ORTHANC_TEST_ROOT:-}

# /usr/sbin is not on every user's PATH, so look there too.
have_nginx() { command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; }
have_orthanc() { command -v Orthanc >/dev/null 2>&1 || [ -x /usr/sbin/Orthanc ]; }

if have_orthanc && dpkg -s orthanc-dicomweb >/dev/null 2>&1 && have_nginx && command -v openssl >/dev/null 2>&1; then
    echo "install-orthanc: Orthanc, orthanc-dicomweb, nginx and openssl are already installed"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install-orthanc: must run as root (or: sudo apt-get install orthanc orthanc-dicomweb nginx openssl)" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-orthanc: apt-get not found; install Orthanc >= 1.10 with its DICOMweb plugin and nginx by hand" >&2
    exit 1
fi

# Debian's maintainer scripts try to start the system services (Orthanc on port
# 8042, nginx on port 80); a policy-rc.d that answers 101 forbids that for the
# duration of the install.
policy=$root/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    created_policy=1
fi
cleanup() { if [ "$created_policy" = 1 ]; then rm -f "$policy"; fi; }
trap cleanup EXIT

# The process id of a system service (systemd's main pid, else the one its pid file
# names), if it is running; empty otherwise.
service_pid() {
    local name=$1 pid_file=$2 pid=
    if [ -d "$root/run/systemd/system" ] && command -v systemctl >/dev/null 2>&1; then
        pid=$(systemctl show --property MainPID --value "$name.service" 2>/dev/null || true)
        [ "$pid" = 0 ] && pid=
    fi
    if [ -z "$pid" ] && [ -s "$pid_file" ]; then
        pid=$(cat "$pid_file")
    fi
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then echo "$pid"; fi
}

# What runs now is the user's and stays; only a service the install started is stopped.
orthanc_before=$(service_pid orthanc "$root/run/orthanc.pid")
nginx_before=$(service_pid nginx "$root/run/nginx.pid")

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# On bookworm `nginx` itself is the minimal build (nginx-light only adds a module).
apt-get install -y -qq --no-install-recommends orthanc orthanc-dicomweb nginx openssl >/dev/null

# Belt and braces, should a pre-existing policy-rc.d have let a service start: stop
# that service's own process, never another Orthanc or nginx (the tests' own
# instances, a user's server).
stop_if_started() {
    local name=$1 pid_file=$2 before=$3 pid
    pid=$(service_pid "$name" "$pid_file")
    if [ -n "$pid" ] && [ "$pid" != "$before" ]; then
        echo "install-orthanc: stopping the $name service the install started (pid $pid)"
        kill "$pid" 2>/dev/null || true
    fi
}
stop_if_started orthanc "$root/run/orthanc.pid" "$orthanc_before"
stop_if_started nginx "$root/run/nginx.pid" "$nginx_before"
echo "install-orthanc: installed $(dpkg-query -W -f='${Version}' orthanc) with orthanc-dicomweb $(dpkg-query -W -f='${Version}' orthanc-dicomweb) and nginx $(dpkg-query -W -f='${Version}' nginx)"
