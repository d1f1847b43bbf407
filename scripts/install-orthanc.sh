#!/usr/bin/env bash
# Install Debian's Orthanc, its DICOMweb plugin and nginx, idempotently and without
# leaving a system-wide Orthanc or nginx running. The test suite starts its own
# instances: Orthanc on loopback, and nginx as a TLS front for the HTTPS tests
# (tests/support/tls.py).
set -euo pipefail

# /usr/sbin is not on every user's PATH, so look there too.
have_nginx() { command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; }

if command -v Orthanc >/dev/null 2>&1 && dpkg -s orthanc-dicomweb >/dev/null 2>&1 && have_nginx; then
    echo "install-orthanc: Orthanc, orthanc-dicomweb and nginx are already installed"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install-orthanc: must run as root (or: sudo apt-get install orthanc orthanc-dicomweb nginx)" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-orthanc: apt-get not found; install Orthanc >= 1.10 with its DICOMweb plugin and nginx by hand" >&2
    exit 1
fi

# Debian's maintainer scripts try to start the system services (Orthanc on port
# 8042, nginx on port 80); a policy-rc.d that answers 101 forbids that for the
# duration of the install.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    created_policy=1
fi
cleanup() { if [ "$created_policy" = 1 ]; then rm -f "$policy"; fi; }
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# On bookworm `nginx` itself is the minimal build (nginx-light only adds a module).
apt-get install -y -qq --no-install-recommends orthanc orthanc-dicomweb nginx >/dev/null

# Belt and braces: if a service started anyway, stop it.
if pgrep -x Orthanc >/dev/null 2>&1; then
    service orthanc stop >/dev/null 2>&1 || pkill -x Orthanc || true
fi
# Only the system nginx writes /run/nginx.pid; the tests' own nginx instances keep
# their pid files in throw-away folders and must survive a rerun of this script.
if [ -s /run/nginx.pid ] && kill -0 "$(cat /run/nginx.pid)" 2>/dev/null; then
    service nginx stop >/dev/null 2>&1 || kill "$(cat /run/nginx.pid)" || true
fi
echo "install-orthanc: installed $(dpkg-query -W -f='${Version}' orthanc) with orthanc-dicomweb $(dpkg-query -W -f='${Version}' orthanc-dicomweb) and nginx $(dpkg-query -W -f='${Version}' nginx)"
