#!/usr/bin/env bash
# Install a Debian package when a probe says what it provides is missing:
#   infra/debian-package.sh PACKAGE WHAT PROBE [ARG...]
# The probe (a command) succeeds when the package's files are there; then nothing is done. Run as
# root, or install PACKAGE from your distribution yourself (the message says which).
set -euo pipefail
package=$1 what=$2
shift 2
if "$@" > /dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "$what not found: install Debian's '$package' package (sudo apt-get install $package)," \
         "then run make again" >&2
    exit 1
fi
# one install at a time: `make` runs the setup steps side by side, and apt holds one lock
exec 9> "${TMPDIR:-/tmp}/crm-debian-package.lock"
flock 9
echo "installing Debian's $package package"
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y -qq --no-install-recommends "$package" > /dev/null 2>&1; then
    apt-get update -qq  # a new machine has no package lists yet
    apt-get install -y -qq --no-install-recommends "$package" > /dev/null
fi
"$@" > /dev/null
