#!/usr/bin/env bash
# Install Debian's Orthanc and its DICOMweb plugin, idempotently and without
# leaving a system-wide Orthanc running. The test suite starts its own instances.
set -euo pipefail

if command -v Orthanc >/dev/null 2>&1 && dpkg -s orthanc-dicomweb >/dev/null 2>&1; then
    echo "install-orthanc: Orthanc and orthanc-dicomweb are already installed"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install-orthanc: must run as root (or: sudo apt-get install orthanc orthanc-dicomweb)" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-orthanc: apt-get not found; install Orthanc >= 1.10 with its DICOMweb plugin by hand" >&2
    exit 1
fi

# Debian's maintainer scripts try to start the system service on port 8042;
# a policy-rc.d that answers 101 forbids that for the duration of the install.
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
apt-get install -y -qq --no-install-recommends orthanc orthanc-dicomweb >/dev/null

# Belt and braces: if a service started anyway, stop it.
if pgrep -x Orthanc >/dev/null 2>&1; then
    service orthanc stop >/dev/null 2>&1 || pkill -x Orthanc || true
fi
echo "install-orthanc: installed $(dpkg-query -W -f='${Version}' orthanc) with orthanc-dicomweb $(dpkg-query -W -f='${Version}' orthanc-dicomweb)"
