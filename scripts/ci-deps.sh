#!/usr/bin/env bash
# Debian packages the test suite uses when present (idempotent; safe to run on every CI start).
# The S3 gateway's tool tests (tests/s3/test_s3_tools.py) drive rclone, the AWS CLI and s3cmd; the dashboard's
# browser tests (tests/ui/test_ui_browser.py) drive Debian's chromium with Playwright (never `playwright install`),
# and the stored site there is fetched with curl too; namespaced devnets (tests/netem) need iptables (and root);
# where they cannot be installed, those tests skip and say so.  Intel's ISA-L (libisal2) computes a put's parity blocks
# where it is installed (xsc/storage/core/isal.py; without it zfec does, and its tests skip).
set -uo pipefail
PACKAGES=(rclone awscli s3cmd chromium curl iptables libisal2)
missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
    echo "ci-deps: not root and no sudo: not installing ${missing[*]} (their tests will skip)" >&2; exit 0; fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "ci-deps: no apt-get: not installing ${missing[*]} (their tests will skip)" >&2; exit 0
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq -o DPkg::Lock::Timeout=300 >/dev/null 2>&1 || true
if ! $SUDO apt-get install -y -qq -o DPkg::Lock::Timeout=300 --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
  echo "ci-deps: could not install ${missing[*]} (their tests will skip)" >&2
fi
exit 0
