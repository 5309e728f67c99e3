#!/usr/bin/env bash
# Real-Slurm test dependencies (tests/enforce): Debian's Slurm daemons and clients, munge, and a MariaDB server
# for slurmdbd at 127.0.0.1:3306 (root, no password). Installs only what is missing; needs root and apt-get.
# The test fixture starts munged and the Slurm daemons itself; without these the Slurm tests skip, saying why.
set -euo pipefail
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "slurm-deps: not root or no apt-get; the real-Slurm tests will skip" >&2
  exit 0
fi
need=()
for pkg in slurmctld slurmd slurmdbd slurm-client slurm-wlm-basic-plugins slurm-wlm-mysql-plugin munge; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if ! (exec 3<>/dev/tcp/127.0.0.1/3306) 2>/dev/null; then
  dpkg -s mariadb-server >/dev/null 2>&1 || need+=(mariadb-server)
fi
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if ! (exec 3<>/dev/tcp/127.0.0.1/3306) 2>/dev/null; then
  service mariadb start >/dev/null || (mysqld_safe >/dev/null 2>&1 &)
  for _ in $(seq 1 60); do (exec 3<>/dev/tcp/127.0.0.1/3306) 2>/dev/null && break; sleep 0.5; done
  # root over TCP without a password (Debian's default is unix_socket only)
  mariadb -uroot -e "ALTER USER root@localhost IDENTIFIED VIA unix_socket OR mysql_native_password USING PASSWORD('')" || true
fi
