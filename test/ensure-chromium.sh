#!/usr/bin/env bash
# Installs Debian's Chromium for the Web UI test when /usr/bin/chromium is missing (CI starts on a
# fresh machine); does nothing when it is there. Prints the browser's path.
set -euo pipefail
BIN=/usr/bin/chromium
if [ ! -x "$BIN" ]; then
  SUDO=()
  [ "$(id -u)" -eq 0 ] || SUDO=(sudo -n)
  export DEBIAN_FRONTEND=noninteractive
  # Two test runs at once must not both run apt: the second waits for the first, then finds it done.
  exec 9>/tmp/repowalk-ensure-chromium.lock
  flock 9
  if [ ! -x "$BIN" ]; then
    echo "installing Debian's chromium (apt-get)…" >&2
    "${SUDO[@]}" apt-get update -qq -o DPkg::Lock::Timeout=300 >&2
    "${SUDO[@]}" apt-get install -y -qq -o DPkg::Lock::Timeout=300 chromium >&2
  fi
fi
echo "$BIN"
