#!/usr/bin/env bash
# Installs Debian's GStreamer RTSP server for the camera-fault tests (tests/test_reliability.py), if it is missing.
# The server (benchmarks/reliability/rtsp_server.py) runs with the system's /usr/bin/python3 and python3-gi,
# never the venv; it needs GStreamer's RTSP server, its introspection data and the H.264 encoder/payloader.
# Failure is tolerated: the RTSP tests then skip with the reason.
set -u
HERE="$(cd "$(dirname "$0")" && pwd)"
SERVER="$HERE/../benchmarks/reliability/rtsp_server.py"
PACKAGES="python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad"
ready() { [ -x /usr/bin/python3 ] && /usr/bin/python3 "$SERVER" --check >/dev/null 2>&1; }
if ready; then
    echo "install_rtsp: GStreamer RTSP server present"
    exit 0
fi
if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null 2>&1; then
    echo "install_rtsp: GStreamer RTSP server missing and not root; the RTSP tests will skip"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_rtsp: no apt-get here; the RTSP tests will skip"
    exit 0
fi
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo -n"
if $SUDO apt-get update -qq >/dev/null 2>&1 \
    && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $PACKAGES >/dev/null 2>&1 \
    && ready; then
    echo "install_rtsp: installed GStreamer's RTSP server"
else
    echo "install_rtsp: could not install GStreamer's RTSP server with apt-get; the RTSP tests will skip"
fi
exit 0
