#!/usr/bin/python3
"""A small RTSP camera on 127.0.0.1 for the reliability benchmark and its tests (GStreamer's RTSP server).

Runs with Debian's /usr/bin/python3 (python3-gi plus gir1.2-gst-rtsp-server-1.0 and gstreamer1.0-rtsp,
which bring the encoder; tests/install_rtsp.sh installs them), never with the project's venv: only the
standard library and GStreamer. It serves one H.264 stream (openh264enc) at rtsp://127.0.0.1:PORT/cam,
fed by a pusher thread that behaves like a camera: it makes a frame every 1/fps seconds whether or not
anyone watches.

* Every frame carries its number in its top strip, 24 black or white blocks (``draw_counter``; run.py's
  ``decode_counter`` reads it back), so a client can say exactly which frames it never got.
* Frame numbers follow the wall clock from ``--epoch`` (frame k is due at epoch + k / fps): a server that
  is killed and restarted with the same epoch goes on counting, and the gap is the outage.
* The picture is a luma ramp with a moving bar, or ``--loop FILE``: raw I420 frames of ``--size``, looped.
* Commands on stdin, one per line: ``stall`` (frames are still made and numbered but none leaves: the
  stream freezes while the RTSP session stays open), ``resume``, ``size WxH`` (the resolution changes
  mid-stream; the encoder starts a new sequence with new SPS/PPS), ``quit``. End of stdin also quits,
  so the server never outlives the process that started it.

Prints ``READY <port>`` on stdout once it listens (``ERROR ...`` and exit 2 if it cannot). Events go to
``--log``, one line each: ``<time> <event>``. ``skip A B``: frames A..B never reached the encoder because
this machine was too busy (the pusher fell behind, or the leaky queue in front of the encoder dropped
them, as an overloaded camera does), so no client can have lost them; ``stalled A B``: frames A..B were
held back by ``stall``.
``--check`` only says whether this machine can run the server (exit 0, or exit 3 with the reason).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time

BITS = 24  # frame numbers up to 16.7 M (20,000 frames at 30 fps need 15 bits)
ELEMENTS = ("appsrc", "valve", "queue", "openh264enc", "h264parse", "rtph264pay")


def block_size(width: int) -> int:
    return max(4, width // 32)


def draw_counter(i420: bytearray, k: int, w: int) -> None:
    """Frame number ``k`` into the luma plane: block b (MSB first) at x = (b + 1) * bs, rows bs..2bs."""
    bs = block_size(w)
    for b in range(BITS):
        x = (b + 1) * bs
        if x + bs > w:
            break
        block = bytes([235 if (k >> (BITS - 1 - b)) & 1 else 16]) * bs
        for r in range(bs, 2 * bs):
            i420[r * w + x:r * w + x + bs] = block


def ramp(w: int, h: int) -> bytes:
    """An I420 frame: a diagonal luma ramp, neutral chroma."""
    y = bytearray(w * h)
    for r in range(h):
        y[r * w:(r + 1) * w] = bytes(60 + ((c + r) * 255 // (w + h)) // 2 for c in range(w))
    return bytes(y) + bytes([128]) * (w * h // 2)


def make_frame(k: int, w: int, h: int, base: bytes, moving_bar: bool) -> bytes:
    buf = bytearray(base)
    if moving_bar:  # something that moves, so the encoder has work as with a real scene
        bs, bar = block_size(w), (k * 4) % max(1, w - 16)
        row = bytes([200]) * 16
        for r in range(3 * bs, h):
            buf[r * w + bar:r * w + bar + 16] = row
    draw_counter(buf, k, w)
    return bytes(buf)


class Camera:
    def __init__(self, width: int, height: int, fps: int, epoch: float, log, loop: list[bytes] | None = None):
        self.size = (width, height)
        self.fps, self.epoch, self.log, self.loop = fps, epoch, log, loop
        self.lock = threading.Lock()
        self.appsrc = self.valve = None
        self.caps_size = None  # the size the current appsrc's caps announce
        self.stalled = False
        self.stalled_since_sent = False  # a stall began since the last frame reached the encoder
        self.last_sent = None  # number of the last frame that reached the encoder
        self.stop = threading.Event()
        self.ramps: dict[tuple[int, int], bytes] = {}

    def frame(self, k: int, w: int, h: int) -> bytes:
        if self.loop:
            return make_frame(k, w, h, self.loop[k % len(self.loop)], moving_bar=False)
        if (w, h) not in self.ramps:
            self.ramps[(w, h)] = ramp(w, h)
        return make_frame(k, w, h, self.ramps[(w, h)], moving_bar=True)

    def run(self) -> None:
        """The pusher: frame k at epoch + k / fps, on the wall clock."""
        from gi.repository import Gst

        k = int((time.time() - self.epoch) * self.fps)
        while not self.stop.is_set():
            wait = self.epoch + k / self.fps - time.time()
            if wait > 0:
                self.stop.wait(wait)
            elif -wait > 3 / self.fps:  # more than 3 frames behind (a busy machine): skip them, and say so
                k = int((time.time() - self.epoch) * self.fps)  # the encoder-side probe logs the gap
                continue
            with self.lock:
                src, (w, h) = self.appsrc, self.size
                if src is not None and self.caps_size != (w, h):
                    src.set_property("caps", Gst.Caps.from_string(
                        f"video/x-raw,format=I420,width={w},height={h},framerate={self.fps}/1"))
                    self.caps_size = (w, h)
            if src is not None:
                buf = Gst.Buffer.new_wrapped(self.frame(k, w, h))
                buf.offset = k  # read back in front of the encoder (sent)
                src.emit("push-buffer", buf)
            k += 1

    def sent(self, _pad, info):
        """Pad probe in front of the encoder: a gap in frame numbers is a stall or frames never sent."""
        from gi.repository import Gst

        k = info.get_buffer().offset
        with self.lock:
            if self.last_sent is not None and k > self.last_sent + 1:
                what = "stalled" if self.stalled_since_sent else "skip"
                self.log(f"{what} {self.last_sent + 1} {k - 1}")
            self.last_sent, self.stalled_since_sent = k, self.stalled
        return Gst.PadProbeReturn.OK

    def attach(self, media) -> None:
        element = media.get_element()
        from gi.repository import Gst

        with self.lock:
            self.appsrc, self.valve = element.get_by_name("src"), element.get_by_name("valve")
            self.caps_size, self.last_sent = None, None
            self.valve.set_property("drop", self.stalled)
        element.get_by_name("enc").get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, self.sent)
        media.connect("unprepared", self.detach)
        self.log("media prepared (a client connected)")

    def detach(self, *_) -> None:
        with self.lock:
            self.appsrc = self.valve = None
        self.log("media unprepared")

    def now_k(self) -> int:
        return int((time.time() - self.epoch) * self.fps)

    def command(self, line: str) -> str:
        words = line.split()
        if words and words[0] in ("stall", "resume"):
            with self.lock:
                self.stalled = words[0] == "stall"
                self.stalled_since_sent = self.stalled_since_sent or self.stalled
                if self.valve is not None:
                    self.valve.set_property("drop", self.stalled)
            return f"{words[0]} at k={self.now_k()}"
        if len(words) == 2 and words[0] == "size" and not self.loop:
            w, h = (int(v) for v in words[1].lower().split("x"))
            with self.lock:
                self.size = (w - w % 2, h - h % 2)
            return f"size {self.size[0]}x{self.size[1]} at k={self.now_k()}"
        return f"ignored command {line.strip()!r}"


def check() -> str | None:
    """None when GStreamer, its RTSP server and every element the stream needs are here, else why not."""
    try:
        import gi

        gi.require_version("Gst", "1.0")
        gi.require_version("GstRtspServer", "1.0")
        from gi.repository import Gst, GstRtspServer  # noqa: F401
        del GstRtspServer  # only whether it imports matters here
    except (ImportError, ValueError) as e:
        return f"GStreamer's RTSP server is not importable in {sys.executable} ({e})"
    Gst.init(None)
    missing = [e for e in ELEMENTS if Gst.ElementFactory.find(e) is None]
    return f"GStreamer elements missing: {', '.join(missing)}" if missing else None


def main() -> None:
    a = _parse_args()
    why = check()
    if a.check or why:
        print(why or "ok", flush=True)
        sys.exit(3 if why else 0)
    log = _logger(a.log)
    w, h = (int(v) for v in a.size.lower().split("x"))
    loop = _read_loop(a.loop, w, h) if a.loop else None
    cam = Camera(w, h, a.fps, a.epoch if a.epoch is not None else time.time(), log, loop)
    server = _rtsp_server(cam, a.port, w, h, a.fps, a.gop)
    if server.attach(None) == 0:
        print(f"ERROR cannot listen on 127.0.0.1:{a.port}", flush=True)
        sys.exit(2)
    _serve(cam, server.get_bound_port(), log, a.fps, w, h)


def _parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--size", default="320x240", help="WxH (both even)")
    p.add_argument("--fps", type=int, default=15)
    p.add_argument("--epoch", type=float, default=None, help="wall-clock time of frame 0 (default: now)")
    p.add_argument("--gop", type=int, default=0, help="frames between key frames (default: one second's worth)")
    p.add_argument("--loop", default=None, help="raw I420 frames of --size to loop instead of the ramp")
    p.add_argument("--log", default=None)
    p.add_argument("--check", action="store_true")
    return p.parse_args()


def _logger(path: str | None):
    """``log(msg)``: one ``<time> <event>`` line to ``path`` (appended: restarts share it), else to stderr."""
    log_file = open(path, "a", buffering=1) if path else sys.stderr

    def log(msg: str) -> None:
        log_file.write(f"{time.time():.3f} {msg}\n")
        log_file.flush()

    return log


def _read_loop(path: str, w: int, h: int) -> list[bytes]:
    """The whole ``w``x``h`` I420 frames in ``path``; says ``ERROR`` and exits 2 if there is none."""
    data, n = open(path, "rb").read(), w * h * 3 // 2
    loop = [data[i:i + n] for i in range(0, len(data) - n + 1, n)]
    if not loop:
        print(f"ERROR {path} holds no whole {w}x{h} I420 frame", flush=True)
        sys.exit(2)
    return loop


def _rtsp_server(cam: Camera, port: int, w: int, h: int, fps: int, gop: int):
    """The RTSP server (not yet listening) with ``cam``'s H.264 stream mounted at /cam."""
    from gi.repository import GstRtspServer

    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(  # the valve stalls the stream; the small leaky queue keeps a busy encoder from piling up
        f"( appsrc name=src is-live=true do-timestamp=true format=time "
        f"caps=video/x-raw,format=I420,width={w},height={h},framerate={fps}/1 "
        f"! valve name=valve drop=false ! queue max-size-buffers=4 leaky=downstream "
        f"! openh264enc name=enc gop-size={gop or fps} complexity=low rate-control=bitrate bitrate=1500000 "
        f"! h264parse ! rtph264pay name=pay0 pt=96 config-interval=-1 )")
    factory.set_shared(True)
    factory.connect("media-configure", lambda _factory, media: cam.attach(media))
    server.get_mount_points().add_factory("/cam", factory)
    return server


def _serve(cam: Camera, port: int, log, fps: int, w: int, h: int) -> None:
    """The pusher thread and the main loop, with commands from stdin, until ``quit`` or the end of stdin."""
    from gi.repository import GLib

    loop_main = GLib.MainLoop()

    def on_stdin(_channel, _condition) -> bool:
        line = sys.stdin.readline()
        if not line or line.strip() == "quit":
            loop_main.quit()
            return False
        log(cam.command(line))
        return True

    GLib.io_add_watch(GLib.IOChannel.unix_new(sys.stdin.fileno()), GLib.PRIORITY_DEFAULT,
                      GLib.IOCondition.IN | GLib.IOCondition.HUP, on_stdin)
    pusher = threading.Thread(target=cam.run, daemon=True)
    pusher.start()
    log(f"listening on 127.0.0.1:{port} fps {fps}")
    log(f"size {w}x{h} at k={cam.now_k()}")
    print(f"READY {port}", flush=True)
    try:
        loop_main.run()
    finally:
        cam.stop.set()
        pusher.join(timeout=2)


if __name__ == "__main__":
    main()
