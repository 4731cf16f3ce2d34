#!/usr/bin/env bash
# Install the observability tools the CI tests need, from Debian:
#   prometheus     -> /usr/bin/prometheus (the live PromQL test) and /usr/bin/promtool (check/test rules)
#   docker-compose -> `docker-compose config` validates docker-compose.yml (no Docker engine needed)
# Idempotent: packages already installed are skipped, and apt-get runs only when something is missing.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

wanted=(prometheus docker-compose)
missing=()
for pkg in "${wanted[@]}"; do
    if dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        echo "install-observability-tools: $pkg already installed"
    else
        missing+=("$pkg")
    fi
done

if ((${#missing[@]})); then
    sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        sudo=(sudo)
    fi
    echo "install-observability-tools: installing ${missing[*]}"
    "${sudo[@]}" apt-get update -qq
    # --no-install-recommends: no prometheus-node-exporter; the package's service is not started in containers.
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

prometheus --version 2>&1 | head -n 1
promtool --version 2>&1 | head -n 1
docker-compose version 2>&1 | head -n 1
