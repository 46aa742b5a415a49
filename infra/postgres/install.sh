#!/usr/bin/env bash
# Install Debian's PostgreSQL server packages when no server binaries are present (the
# PostgreSQL warehouse tests start a throwaway server from them: tests/pg_server.py).
# Run as root, or install `postgresql` from your distribution yourself.
set -euo pipefail
if ls /usr/lib/postgresql/*/bin/initdb > /dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin/initdb): install Debian's" \
         "'postgresql' package (sudo apt-get install postgresql), then run make again" >&2
    exit 1
fi
echo "installing Debian's postgresql packages"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends postgresql > /dev/null
ls /usr/lib/postgresql/*/bin/initdb > /dev/null
