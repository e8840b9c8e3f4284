#!/usr/bin/env bash
# Sets up everything `make demo` and `make test` need on a fresh machine:
# qemu-img (Debian's qemu-utils, installed when we are root), a headless Chromium and its
# driver for the dashboard's browser tests (Debian's chromium and chromium-driver, when we
# are root; without them those tests are skipped, or fail under CI=true), a virtualenv in
# .venv and the pinned Python packages. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
say() { printf 'bootstrap: %s\n' "$*"; }
die() { printf 'bootstrap: %s\n' "$*" >&2; exit 1; }
as_root() { [ "$(id -u)" = 0 ]; }
apt_install() {
    say "installing Debian packages: $*"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

command -v "$PYTHON" >/dev/null || die "$PYTHON not found: install Python 3.11 or newer"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    die "Python 3.11 or newer is needed ($("$PYTHON" --version 2>&1) found); set PYTHON=/path/to/python3.11"

if ! command -v qemu-img >/dev/null; then
    if as_root && command -v apt-get >/dev/null; then
        apt_install qemu-utils
    else
        die "qemu-img is missing: install it as root with 'apt-get install qemu-utils' (Debian, Ubuntu, Proxmox VE), then run this again"
    fi
fi

if ! command -v chromedriver >/dev/null || ! command -v chromium >/dev/null; then
    if as_root && command -v apt-get >/dev/null; then
        apt_install chromium chromium-driver
    else
        say "no chromium/chromedriver: the web dashboard's browser tests (tests/ui) will be skipped; as root: apt-get install chromium chromium-driver"
    fi
fi

if [ ! -x .venv/bin/python ]; then
    say "creating the virtualenv in .venv"
    if ! "$PYTHON" -m venv .venv 2>/dev/null; then
        rm -rf .venv
        if as_root && command -v apt-get >/dev/null; then
            apt_install python3-venv
            "$PYTHON" -m venv .venv
        else
            die "'$PYTHON -m venv' failed: install python3-venv (apt-get install python3-venv)"
        fi
    fi
fi

say "installing Python packages (pinned in requirements.lock)"
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
# The product (.) and, beside it, the emulator, the demo harness and the test and lint
# tools (devtools/), both editable: production installs the first alone.
.venv/bin/python -m pip install -q --disable-pip-version-check -c requirements.lock \
    -e . -e './devtools[test,dev]'
touch .venv/.bootstrapped
say "ready"
