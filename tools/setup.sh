#!/usr/bin/env bash
# Installs the system packages the project needs (idempotent; quick when already there).
# libpci-dev + pkg-config: PCI discovery (the CLibPCI system library target).
# libpcap-dev: `virtioctl net fwd --pcap` (the CPcap system library target); tcpdump reads the captures back in the tests.
# prometheus (with promtool): the tests scrape `virtioctl stats --listen` with a real Prometheus server.
# tmux: the tests run the live `stats --watch` view in a real terminal and capture its pane.
# zsh, fish: the tests load the completion scripts in each shell; man-db renders the man page.
# The real-device suite (tools/qemu-test) installs QEMU and the guest kernel pieces itself.
set -euo pipefail
need=()
for pkg in libpci-dev libpcap-dev tcpdump pkg-config prometheus tmux zsh fish man-db; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then echo "setup: need root to install: ${need[*]}" >&2; exit 1; fi
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
# prometheus-client (PyPI): the tests parse `virtioctl stats -o prometheus` with its reference parser.
if command -v python3 >/dev/null && ! python3 -c 'import prometheus_client' 2>/dev/null; then
    python3 -m pip install -q --disable-pip-version-check prometheus-client 2>&1 | grep -v "Running pip as the 'root' user" >&2 || true
    python3 -c 'import prometheus_client' || { echo "setup: could not install prometheus-client with pip" >&2; exit 1; }
fi
command -v swift >/dev/null || { echo "setup: swift is not on PATH (expected Swift 6.3 at /opt/swift)" >&2; exit 1; }
