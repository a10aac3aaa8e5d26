"""Video decode/encode helpers (PyAV), frame arrays, clip sampling and transforms.

Frames travel as ``uint8`` numpy arrays ``(T, H, W, C)`` until the last step,
:func:`to_model_clip`, which resizes (shorter side, antialiased bilinear), center
crops, optionally flips, and maps to ``(F, C, H, W)`` float32 in ``[-1, 1]``.
PyAV (``fvdm[video]``) is imported inside the functions that need it.

Every reader reports bad input as :class:`BadSampleError` with the file name and a
short reason; datasets then skip (counted) or re-raise, by their ``on_error``.
"""

from __future__ import annotations

import io
import logging
import os
import re
import warnings
from pathlib import Path
from typing import IO, Any, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from fvdm.core.errors import DataError

log = logging.getLogger("fvdm.data")

VIDEO_EXTS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".gif")
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
ARRAY_EXTS = (".npy", ".npz")


class BadSampleError(DataError):
    """A sample could not be used; ``source`` names the file, ``kind`` the reason class.

    kinds: ``corrupt`` (unreadable/truncated video, shard or array), ``short`` (fewer
    frames than the clip needs), ``image`` (an unreadable frame image), ``shards``
    (fewer shards than ranks x workers), ``format`` (nothing decodable in a sample).
    """

    def __init__(self, source: str, reason: str, kind: str = "corrupt"):
        self.source, self.reason, self.kind = str(source), reason, kind
        super().__init__(f"{source}: {reason}")


def av_available() -> tuple[bool, str]:
    try:
        import av  # noqa: F401
    except Exception as exc:
        return False, f"PyAV is not importable ({type(exc).__name__}: {exc}); mp4/avi decoding needs it"
    return True, ""


# -- decoding ------------------------------------------------------------------------
def _open_video(src: "str | os.PathLike | bytes | IO[bytes]", name: str) -> Any:
    try:
        import av
    except ImportError as exc:
        raise ImportError(f"decoding {name} needs PyAV: pip install 'fvdm[video]'") from exc
    if isinstance(src, (bytes, bytearray, memoryview)):
        src = io.BytesIO(bytes(src))
    return av.open(str(src) if isinstance(src, os.PathLike) else src, mode="r")


def decode_video(src: "str | os.PathLike | bytes | IO[bytes]", *, max_frames: int | None = None,
                 name: str | None = None) -> np.ndarray:
    """Decode a video file or bytes with PyAV -> uint8 (T, H, W, 3).

    ``max_frames`` stops decoding early (a clip from the start needs no more).
    Raises :class:`BadSampleError` for unreadable, truncated or empty videos.
    """
    return decode_clip(src, None if max_frames is None else (lambda n: np.arange(min(n, max_frames))),
                       name=name)


def decode_clip(src: "str | os.PathLike | bytes | IO[bytes]", choose: Any = None, *,
                name: str | None = None) -> np.ndarray:
    """Decode only what a clip needs -> uint8 (len(idx), H, W, 3).

    ``choose(num_frames) -> frame indices`` picks the clip from the frame count; the count
    comes from the container header when it has one (then decoding stops after the last
    chosen frame, and restarts from the true count if the header was wrong), else from a
    full decode. ``choose=None`` returns every frame. BadSampleError for unreadable,
    truncated or empty videos and for a ``choose`` that raises it (e.g. too short).
    """
    name = name or (str(src) if isinstance(src, (str, os.PathLike)) else "<bytes>")
    frames: list[np.ndarray] = []
    idx = None
    try:
        with _open_video(src, name) as container:
            if not container.streams.video:
                raise BadSampleError(name, "no video stream", "corrupt")
            stream = container.streams.video[0]
            # no frame threading: for short clips the thread start-up costs more than it saves (measured)
            header = int(stream.frames or 0)
            stop = None
            if choose is not None and header > 0:
                idx = np.asarray(choose(header))
                stop = int(idx.max()) + 1 if idx.size else 0
            for frame in container.decode(stream):
                if stop is not None and len(frames) >= stop:
                    break
                frames.append(frame.to_ndarray(format="rgb24"))
    except BadSampleError:
        raise
    except Exception as exc:  # av.error.*, OSError, EOFError: corrupt or truncated
        # A truncated file can still yield its leading frames before the error; we do not
        # trust them (the tail is missing) and report the file as corrupt.
        raise BadSampleError(name, f"cannot decode video ({type(exc).__name__}: {exc})", "corrupt") from None
    if not frames:
        raise BadSampleError(name, "video has no decodable frames", "corrupt")
    if choose is None:
        return np.stack(frames)
    if idx is None or (idx.size and int(idx.max()) >= len(frames)):
        idx = np.asarray(choose(len(frames)))  # no header count, or it overstated the frames
    return np.stack([frames[i] for i in idx])


def encode_video(frames: np.ndarray, dst: "str | os.PathLike | IO[bytes]", *, fps: int = 8,
                 codec: str = "libx264", crf: int | None = None, container_format: str | None = None) -> None:
    """Encode uint8 (T, H, W, C) frames (C = 1 or 3) to a video file or file object.

    H and W must be even for yuv420p codecs (libx264, mpeg4).
    """
    import av

    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] not in (1, 3):
        raise ValueError(f"encode_video wants uint8 (T, H, W, 1|3), got {frames.dtype} {frames.shape}")
    if frames.shape[-1] == 1:
        frames = np.repeat(frames, 3, axis=-1)
    t, h, w, _ = frames.shape
    fmt = container_format or ("mp4" if not isinstance(dst, (str, os.PathLike)) else None)
    with av.open(dst if not isinstance(dst, os.PathLike) else str(dst), mode="w", format=fmt) as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height = w, h
        stream.pix_fmt = "yuv420p"
        if crf is not None and codec == "libx264":
            stream.options = {"crf": str(crf)}
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def encode_video_bytes(frames: np.ndarray, *, fps: int = 8, codec: str = "libx264", crf: int | None = None) -> bytes:
    buf = io.BytesIO()
    encode_video(frames, buf, fps=fps, codec=codec, crf=crf, container_format="mp4")
    return buf.getvalue()


def decode_image(data: "bytes | str | os.PathLike", name: str | None = None) -> np.ndarray:
    """One image (bytes or path) -> uint8 (H, W, C) with C = 1 or 3; BadSampleError('image') if unreadable."""
    from PIL import Image

    name = name or (str(data) if isinstance(data, (str, os.PathLike)) else "<bytes>")
    try:
        with Image.open(io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data) as im:
            im.load()
            if im.mode not in ("L", "RGB"):
                im = im.convert("RGB")
            arr = np.asarray(im)
    except Exception as exc:
        raise BadSampleError(name, f"unreadable image ({type(exc).__name__}: {exc})", "image") from None
    return arr[..., None] if arr.ndim == 2 else arr


def encode_image(frame: np.ndarray, fmt: str = "png", quality: int = 95) -> bytes:
    from PIL import Image

    frame = np.asarray(frame)
    im = Image.fromarray(frame[..., 0] if frame.ndim == 3 and frame.shape[-1] == 1 else frame)
    buf = io.BytesIO()
    if fmt in ("jpg", "jpeg"):
        im.save(buf, format="JPEG", quality=quality)
    else:
        im.save(buf, format=fmt.upper())
    return buf.getvalue()


def frames_from_array(arr: Any, name: str) -> np.ndarray:
    """A stored array -> uint8 (T, H, W, C).

    Accepts (T, H, W), (T, H, W, C) or (T, C, H, W) with C in {1, 3}; uint8 in
    [0, 255] or float in [0, 1].
    """
    a = np.asarray(arr)
    if a.ndim == 3:
        a = a[..., None]
    if a.ndim != 4:
        raise BadSampleError(name, f"array of shape {a.shape} is not a clip (T, H, W[, C])", "corrupt")
    if a.shape[-1] not in (1, 3) and a.shape[1] in (1, 3):
        a = a.transpose(0, 2, 3, 1)  # (T, C, H, W) -> (T, H, W, C)
    if a.shape[-1] not in (1, 3):
        raise BadSampleError(name, f"array of shape {a.shape}: channel axis must have 1 or 3 entries", "corrupt")
    if a.dtype != np.uint8:
        if not np.issubdtype(a.dtype, np.floating):
            raise BadSampleError(name, f"array dtype {a.dtype}: store uint8 or float in [0, 1]", "corrupt")
        a = np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(a)


def load_array(data: "bytes | str | os.PathLike", name: str) -> np.ndarray:
    """.npy or .npz (key ``frames``, ``video`` or the first array) -> uint8 (T, H, W, C)."""
    try:
        f = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
        obj = np.load(f, allow_pickle=False)
        if isinstance(obj, np.lib.npyio.NpzFile):
            with obj:
                keys = list(obj.keys())
                if not keys:
                    raise ValueError("empty npz")
                key = next((k for k in ("frames", "video") if k in keys), keys[0])
                arr = obj[key]
        else:
            arr = obj
    except BadSampleError:
        raise
    except Exception as exc:
        raise BadSampleError(name, f"cannot load array ({type(exc).__name__}: {exc})", "corrupt") from None
    return frames_from_array(arr, name)


# -- natural order -------------------------------------------------------------------
_DIGITS = re.compile(r"(\d+)")


def natural_key(s: str) -> list[Any]:
    """'frame10' sorts after 'frame9' (numbers compare as numbers)."""
    return [int(p) if p.isdigit() else p.lower() for p in _DIGITS.split(s)]


def natural_sort(names: Iterable[str], *, where: str = "", warn: bool = True) -> list[str]:
    """Sort frame names in natural order; warn when their numbers are not zero-padded
    (then plain lexical order, as many tools use, would differ)."""
    names = list(names)
    out = sorted(names, key=natural_key)
    if warn and out != sorted(names):
        warnings.warn(
            f"frame names in {where or 'a frame folder'} are not zero-padded (e.g. {out[:3]}); "
            "using natural order (frame2 before frame10). Zero-pad names to silence this.",
            stacklevel=2,
        )
    return out


# -- clip sampling and transforms ----------------------------------------------------
def clip_indices(num_available: int, num_frames: int, stride: int, offset: str,
                 rng: np.random.Generator | None, name: str) -> np.ndarray:
    """Frame indices of one clip: ``num_frames`` frames ``stride`` apart.

    offset: ``start`` (first frames), ``center`` or ``random`` (uniform start, from ``rng``).
    Raises BadSampleError('short') when the video is too short.
    """
    span = (num_frames - 1) * stride + 1
    if num_available < span:
        raise BadSampleError(
            name, f"clip needs {span} frames ({num_frames} at stride {stride}) but the video has {num_available}",
            "short")
    slack = num_available - span
    if offset == "start":
        start = 0
    elif offset == "center":
        start = slack // 2
    elif offset == "random":
        start = int(rng.integers(0, slack + 1)) if rng is not None else 0
    else:
        raise ValueError(f"offset must be start|center|random, got {offset!r}")
    return start + stride * np.arange(num_frames)


def resize_center_crop(video: torch.Tensor, size: int | None) -> torch.Tensor:
    """(F, C, H, W) float -> (F, C, size, size): shorter side to ``size`` (antialiased
    bilinear), then a center crop. ``None`` keeps the frames unchanged."""
    if size is None:
        return video
    f, c, h, w = video.shape
    if (h, w) != (size, size):
        scale = size / min(h, w)
        nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
        if (nh, nw) != (h, w):
            video = F.interpolate(video, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
        top, left = (nh - size) // 2, (nw - size) // 2
        video = video[:, :, top:top + size, left:left + size]
    return video


def to_model_clip(frames: np.ndarray, *, channels: int, resolution: int | None, flip: bool = False) -> torch.Tensor:
    """uint8 (F, H, W, C) -> float32 (F, C', R, R) in [-1, 1].

    channels: 1 (RGB -> luma, ITU-R BT.601 weights) or 3 (gray replicated).
    """
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()  # (F, C, H, W) in [0, 255]
    if x.shape[1] == 3 and channels == 1:
        w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        x = (x * w).sum(1, keepdim=True)
    elif x.shape[1] == 1 and channels == 3:
        x = x.expand(-1, 3, -1, -1)
    x = resize_center_crop(x, resolution)
    if flip:
        x = x.flip(-1)
    return (x / 127.5 - 1.0).clamp_(-1.0, 1.0).contiguous()


def to_uint8_frames(video: torch.Tensor) -> np.ndarray:
    """(F, C, H, W) float in [-1, 1] -> uint8 (F, H, W, C) (round to nearest)."""
    x = ((video.detach().float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().numpy()


def key_seed(*parts: Any) -> np.random.Generator:
    """A generator seeded by a stable hash of ``parts`` (strings and ints), the same in every
    process and for any worker count (Python's ``hash`` is salted per process, so not used)."""
    import hashlib

    h = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=16).digest()
    return np.random.default_rng([int.from_bytes(h[i:i + 4], "little") for i in range(0, 16, 4)])


# -- bad-input policy --------------------------------------------------------------------
SKIP_KINDS = ("corrupt", "short", "image", "shards", "format")
_MAX_WORKER_ROWS = 256


class SkipCounter:
    """Counts skipped samples by kind across DataLoader workers; warns with the running count.

    The counts live in a shared-memory tensor (one row per worker, so no two processes
    write the same cell) that DataLoader workers inherit, so the main process sees every
    worker's skips: ``dataset.skip_counts()`` -> ``{"corrupt": 2, ...}`` for the log and
    TensorBoard.
    """

    def __init__(self, dataset: str):
        self.dataset = dataset
        self._counts = torch.zeros(_MAX_WORKER_ROWS, len(SKIP_KINDS), dtype=torch.int64)
        try:
            self._counts.share_memory_()
        except Exception:  # pragma: no cover - no shared memory: counts stay per process
            pass

    def handle(self, err: BadSampleError, on_error: str) -> None:
        """Re-raise (``on_error='raise'``) or count and warn (``'skip'``)."""
        if on_error == "raise":
            raise err
        info = torch.utils.data.get_worker_info()
        row = 0 if info is None else 1 + info.id % (_MAX_WORKER_ROWS - 1)
        kind = err.kind if err.kind in SKIP_KINDS else "corrupt"
        self._counts[row, SKIP_KINDS.index(kind)] += 1
        n = int(self._counts.sum())
        msg = f"{self.dataset}: skipped {err.source} ({err.kind}: {err.reason}); {n} skipped so far"
        if n <= 10 or (n & (n - 1)) == 0:  # the first ten, then at powers of two
            if log.hasHandlers():  # a configured log (the engine's) gets it too; else stderr once is enough
                log.warning(msg)
            warnings.warn(msg, RuntimeWarning, stacklevel=3)

    def counts(self) -> dict[str, int]:
        tot = self._counts.sum(0)
        return {k: int(tot[i]) for i, k in enumerate(SKIP_KINDS) if int(tot[i])}


def parse_size(text: "str | int") -> int:
    """'1GB' / '500MB' / '10k' / 1234 -> bytes (decimal units, as disk tools print)."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*([\d.]+)\s*([kmgt]?)(i?)b?\s*", str(text).lower())
    if not m:
        raise ValueError(f"cannot parse size {text!r}; use e.g. 1GB, 500MB, 64k")
    base = 1024 if m.group(3) else 1000
    return int(float(m.group(1)) * base ** "_kmgt".index(m.group(2) or "_"))


def read_frame_folder(folder: Path, names: Sequence[str], indices: Sequence[int]) -> np.ndarray:
    """Load the chosen frames of a frame folder -> uint8 (F, H, W, C)."""
    frames = [decode_image(folder / names[i], name=str(folder / names[i])) for i in indices]
    shapes = {f.shape for f in frames}
    if len(shapes) > 1:
        raise BadSampleError(str(folder), f"frames differ in size {sorted(shapes)}", "image")
    return np.stack(frames)
