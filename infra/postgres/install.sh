#!/usr/bin/env bash
# Debian's PostgreSQL server packages, when no server binaries are present: the PostgreSQL
# warehouse tests start a throwaway server from them (tests/pg_server.py).
exec "$(dirname "$0")/../debian-package.sh" postgresql \
    "PostgreSQL server binaries (/usr/lib/postgresql/*/bin/initdb)" \
    sh -c 'ls /usr/lib/postgresql/*/bin/initdb'
