#!/usr/bin/env bash
# Install what the gateway, its lab and its tests need on Debian 12, as root:
# Debian packages (only those missing) and a virtualenv in .venv with the project.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  python3 python3-venv python3-dev iproute2 nftables iputils-ping procps psmisc ethtool
  tcpdump tshark iperf3
  strongswan-charon strongswan-swanctl libcharon-extra-plugins libstrongswan-extra-plugins
  strongswan-pki softether-vpnserver softether-vpncmd prometheus
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# SoftEther's packaged service phones home (DDNS, keep-alive): the tests start their own
# server inside a namespace, so the system one stays off.
# Prometheus likewise: the tests start their own server, scraping only the lab.
for unit in softether-vpnserver.service prometheus.service prometheus-node-exporter.service; do
  if command -v systemctl >/dev/null && systemctl list-unit-files "$unit" >/dev/null 2>&1; then
    systemctl disable --now "$unit" >/dev/null 2>&1 || true
  fi
done

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
echo "install.sh: ready (.venv/bin/gateway)"
