#!/usr/bin/env bash
# Make sure the test PostgreSQL answers at 127.0.0.1:5432 with trust auth and a database `test`.
# A machine that already runs one is left alone; otherwise Debian's postgresql is installed, started and set up.
# Exits non-zero when it still cannot reach one: the tests then fail in CI rather than skip.
set -euo pipefail
ready() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null && psql -h 127.0.0.1 -U postgres -d test -c 'select 1' >/dev/null 2>&1; }
if command -v pg_isready >/dev/null && ready; then
  echo "postgres: reachable at 127.0.0.1:5432"
  exit 0
fi
echo "postgres: not reachable, installing and starting Debian's postgresql"
export DEBIAN_FRONTEND=noninteractive
if ! command -v pg_ctlcluster >/dev/null; then
  apt-get update -q >/dev/null && apt-get install -y -q postgresql >/dev/null
fi
ver=$(ls /etc/postgresql | sort -V | tail -n 1)
if [ -z "$ver" ]; then echo "postgres: no cluster after install" >&2; exit 1; fi
[ -d "/etc/postgresql/$ver/main" ] || pg_createcluster "$ver" main
hba="/etc/postgresql/$ver/main/pg_hba.conf"
grep -q '^host all all 127.0.0.1/32 trust' "$hba" || sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
sed -i "s/^#\?listen_addresses.*/listen_addresses = '127.0.0.1'/" "/etc/postgresql/$ver/main/postgresql.conf"
pg_ctlcluster "$ver" main restart || pg_ctlcluster "$ver" main start
for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
psql -h 127.0.0.1 -U postgres -tc "select 1 from pg_database where datname='test'" | grep -q 1 \
  || psql -h 127.0.0.1 -U postgres -c 'create database test' >/dev/null
ready && echo "postgres: ready" && exit 0
echo "postgres: still unreachable at 127.0.0.1:5432" >&2
exit 1
