#!/usr/bin/env bash
# Set up a development environment on a fresh Debian/Ubuntu machine (or reuse an existing one):
# X server packages for the napari GUI tests, a .venv, torch (CPU build pinned here, never in the
# package), the package itself in editable mode with its test extras and a Qt binding.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(uname -s)" = "Linux" ] && ! command -v Xvfb >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    xvfb libxcb-icccm4 libxcb-keysyms1 libxcb-xinerama0 libxcb-image0 libxcb-render-util0 \
    libxcb-shape0 libxcb-randr0 libxcb-xfixes0 libxkbcommon-x11-0 libgl1 libegl1 \
    libdbus-1-3 libfontconfig1 >/dev/null
fi

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch first and pinned: an unpinned request would pull a multi-GB CUDA build.
.venv/bin/python -m pip install -q -c .ci/constraints.txt torch
.venv/bin/python -m pip install -q -c .ci/constraints.txt -e ".[testing]" PyQt5 build
# elasticdeform (the reference implementation our augmentation is benchmarked and tested
# against) ships a wheel built for numpy 1.x; build it from source against numpy 2.
.venv/bin/python -m pip install -q -c .ci/constraints.txt setuptools wheel
.venv/bin/python -m pip install -q -c .ci/constraints.txt --no-binary elasticdeform \
  --no-build-isolation elasticdeform
echo "napari-unet development environment ready in .venv"
