"""An RTSP camera on 127.0.0.1 made with gst-rtsp-server (Debian `gir1.2-gst-rtsp-server-1.0`): the
generated parts of `demo_frames` looped as live H.264 at `fps`, on any mount path. A real RTSP server
(UDP or TCP transport, as rtspsrc negotiates it), for the acceptance run and the sinks benchmark:

    python -m support.gst_rtsp PORT /line [FPS]

runs until killed; `GstRtspCamera` runs it in a child process."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from support.line_servers import ProcessServer


def serve(port: int, mount: str, fps: int, folder: Path) -> None:
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer

    from support.stream_servers import demo_frames

    Gst.init(None)
    for i, jpg in enumerate(demo_frames()):
        (folder / f"{i:03d}.jpg").write_bytes(jpg)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(port))
    factory = GstRtspServer.RTSPMediaFactory()
    # multifilesrc loops over the JPEGs; videorate makes them a steady live-like stream; x264enc as a camera.
    factory.set_launch(
        f"( multifilesrc location={folder}/%03d.jpg loop=true caps=image/jpeg,framerate={fps}/1 ! jpegdec "
        f"! videoconvert ! video/x-raw,format=I420 ! x264enc tune=zerolatency speed-preset=ultrafast "
        f"key-int-max={fps} ! rtph264pay name=pay0 pt=96 config-interval=1 )")
    factory.set_shared(True)
    server.get_mount_points().add_factory(mount, factory)
    server.attach(None)
    GLib.MainLoop().run()


class GstRtspCamera(ProcessServer):
    def __init__(self, mount: str = "/line", fps: int = 30, port: int | None = None) -> None:
        super().__init__(port)
        self.mount = mount
        self.fps = fps
        self.folder = tempfile.TemporaryDirectory(prefix="dualkd-rtsp-")

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}{self.mount}"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "support.gst_rtsp", str(self.port), self.mount, str(self.fps),
                self.folder.name]


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4, 5):
        sys.exit("usage: python -m support.gst_rtsp PORT /MOUNT [FPS [FOLDER]]")
    with tempfile.TemporaryDirectory(prefix="dualkd-rtsp-") as tmp:
        fps = int(sys.argv[3]) if len(sys.argv) > 3 else 30
        serve(int(sys.argv[1]), sys.argv[2], fps, Path(sys.argv[4] if len(sys.argv) > 4 else tmp))
