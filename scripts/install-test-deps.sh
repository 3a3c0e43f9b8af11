#!/usr/bin/env bash
# Tools the deployment checks (tests/deploy.rs) need, installed with apt only when missing:
#
#   docker-compose   `docker-compose config` validates docker/docker-compose.yml (no engine needed)
#   systemd          `systemd-analyze verify` checks config/redisforge.service
#   logrotate        `logrotate` runs config/logrotate/redisforge against a temp log
#   gettext-base     `envsubst` renders config/redis.conf.template as its header documents
#
# `apt-get update` runs at most once, and only when something is missing; sudo only when not
# root. Called by scripts/test.sh; safe to run again (installs nothing the second time).
set -euo pipefail

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    SUDO=(sudo)
fi

# command → Debian package providing it
declare -A PACKAGE_OF=(
    [docker-compose]=docker-compose
    [systemd-analyze]=systemd
    [logrotate]=logrotate
    [envsubst]=gettext-base
)

have() {
    # logrotate lives in /usr/sbin, which a non-root PATH may lack.
    command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]
}

missing=()
for cmd in docker-compose systemd-analyze logrotate envsubst; do
    if ! have "$cmd"; then
        missing+=("${PACKAGE_OF[$cmd]}")
    fi
done

if [ "${#missing[@]}" -eq 0 ]; then
    echo "deploy test tools present: docker-compose, systemd-analyze, logrotate, envsubst"
    exit 0
fi
echo "installing ${missing[*]}"
"${SUDO[@]}" apt-get update
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
