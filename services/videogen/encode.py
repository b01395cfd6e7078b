"""Video encoding: RGB frames -> MP4 (H.264 via PyAV), animated GIF or animated WebP bytes."""
from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from PIL import Image

from genmesh.worker.media import EncodedMedia

CONTENT_TYPES = {"mp4": "video/mp4", "gif": "image/gif", "webp": "image/webp"}


@dataclass(frozen=True)
class EncodedVideo(EncodedMedia):
    num_frames: int
    fps: float
    duration_seconds: float


def encode_video(frames: Sequence[Image.Image], output_format: str, *, fps: float,
                 crf: int = 20) -> EncodedVideo:
    """Encode equally sized RGB frames shown at `fps`.

    MP4 stores every frame. GIF and WebP (Pillow/libwebp) store a run of identical consecutive
    frames as one frame shown longer: same playback, fewer stored frames.
    """
    if not frames:
        raise ValueError("a video needs at least one frame")
    fmt = output_format.lower()
    encoders = {"mp4": _mp4, "gif": _gif, "webp": _webp}
    if fmt not in encoders:
        raise ValueError(f"unsupported video format {output_format!r}")
    rgb = [f.convert("RGB") for f in frames]
    data, (width, height) = encoders[fmt](rgb, fps, crf)
    return EncodedVideo(data=data, content_type=CONTENT_TYPES[fmt], width=width, height=height,
                        num_frames=len(rgb), fps=fps, duration_seconds=len(rgb) / fps)


def _mp4(frames: list[Image.Image], fps: float, crf: int) -> tuple[bytes, tuple[int, int]]:
    import av

    # yuv420p (what every player decodes) subsamples chroma 2x2, so H.264 needs even sides.
    width, height = frames[0].width // 2 * 2, frames[0].height // 2 * 2
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as container:
        # A small rational time base that represents fractional rates such as 23.976 exactly.
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": str(crf), "preset": "medium"}
        for frame in frames:
            if frame.size != (width, height):
                frame = frame.crop((0, 0, width, height))
            for packet in stream.encode(av.VideoFrame.from_image(frame)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue(), (width, height)


def _frame_ms(fps: float) -> int:
    return max(1, round(1000 / fps))


def _gif(frames: list[Image.Image], fps: float, crf: int) -> tuple[bytes, tuple[int, int]]:
    # GIF delays are in 1/100 s, so frame rates are approximate (60 fps plays at 50).
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:],
                   duration=_frame_ms(fps), loop=0, optimize=False, disposal=1)
    return buf.getvalue(), frames[0].size


def _webp(frames: list[Image.Image], fps: float, crf: int) -> tuple[bytes, tuple[int, int]]:
    buf = io.BytesIO()
    frames[0].save(buf, format="WEBP", save_all=True, append_images=frames[1:],
                   duration=_frame_ms(fps), loop=0, quality=85, method=4)
    return buf.getvalue(), frames[0].size
