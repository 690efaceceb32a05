#!/usr/bin/env bash
# Install the Debian packages listed in .ci/system-packages.txt whose command is missing.
# Runs apt-get as root (or through sudo); stops with a clear message where neither is possible,
# so no test is ever skipped for a missing tool.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
while read -r cmd pkg; do
  case "$cmd" in ''|'#'*) continue ;; esac
  command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
done < .ci/system-packages.txt
[ ${#missing[@]} -eq 0 ] && exit 0
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
  else
    echo "The test suite needs these Debian packages: ${missing[*]}" >&2
    echo "Install them first:  sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi
echo "installing system packages the tests need: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
