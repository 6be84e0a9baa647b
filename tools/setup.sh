#!/usr/bin/env bash
# Installs the system packages the project needs (idempotent; quick when already there).
# libpci-dev + pkg-config: PCI discovery (the CLibPCI system library target).
# The real-device suite (tools/qemu-test) installs QEMU and the guest kernel pieces itself.
set -euo pipefail
need=()
for pkg in libpci-dev pkg-config; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then echo "setup: need root to install: ${need[*]}" >&2; exit 1; fi
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
command -v swift >/dev/null || { echo "setup: swift is not on PATH (expected Swift 6.3 at /opt/swift)" >&2; exit 1; }
