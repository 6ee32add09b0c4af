#!/usr/bin/env bash
# One-step set-up on a fresh Debian/Ubuntu machine: system libraries for napari under Xvfb, a
# virtual environment in .venv, the CPU build of torch, and napari-medseg with its test extras.
set -euo pipefail
cd "$(dirname "$0")/.."

SYSTEM_PACKAGES="xvfb xauth libgl1 libegl1 libgl1-mesa-dri libxkbcommon-x11-0 libxcb-cursor0
libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-randr0 libxcb-render-util0 libxcb-shape0
libxcb-xkb1 libdbus-1-3 libfontconfig1"

missing=""
for pkg in $SYSTEM_PACKAGES; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    echo "installing system packages:$missing"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing
fi

PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch==2.13.0 pins the CPU build; a bare torch>=2.2 would pull a multi-GB CUDA build
.venv/bin/python -m pip install -q "torch==2.13.0" -e ".[testing]"
echo "napari-medseg is installed in .venv"
