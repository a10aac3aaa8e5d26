"""Reading user images/videos and writing GIF / PNG grid / mp4, atomically.

Videos are (B, F, C, H, W) float in [-1, 1]. Every writer writes to a temporary
file in the target directory and renames it into place, so an interrupted or failed
run leaves no partial files; ``AtomicOutputs`` does the same for a set of files
(all are renamed only when every one was written).
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

from fvdm.core.atomic import atomic_write

VIDEO_EXTS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".gif")


def to_uint8(video: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float -> uint8, same shape. Refuses non-finite values: NaN would silently become black."""
    v = video.detach().float().cpu()
    bad = int((~torch.isfinite(v)).sum())
    if bad:
        raise ValueError(f"refusing to write a video with {bad} non-finite value(s) (NaN/inf) of {v.numel()}: the "
                         "model produced them; check the checkpoint (fvdm train --resume reports damaged weights) "
                         "or the sampler settings")
    return ((v.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def upscale_nearest(v: torch.Tensor, scale: int) -> torch.Tensor:
    """(B, F, C, H, W) -> (B, F, C, H*scale, W*scale) by pixel repetition: small frames stay crisp to look at."""
    if scale < 1:
        raise ValueError(f"upscale factor must be >= 1, got {scale}")
    if scale == 1:
        return v
    return v.repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1)


def auto_scale(height: int, min_px: int = 96) -> int:
    """Smallest integer factor that shows a frame of ``height`` pixels at >= ``min_px`` pixels."""
    return max(1, -(-min_px // max(int(height), 1)))


def _frames_hwc(video: torch.Tensor, pad: int = 1, scale: int = 1) -> list[Any]:
    """(B, F, C, H, W) -> list of F uint8 numpy frames (H*s, B*W*s (+pad), 3 or 1): clips side by side."""
    from einops import rearrange

    v = upscale_nearest(to_uint8(video), scale)
    if pad and v.shape[0] > 1:  # a white column between clips
        v = torch.nn.functional.pad(v, (0, pad), value=255)
    return list(rearrange(v, "b f c h w -> f h (b w) c").numpy())


def _pil(frame: Any) -> Any:
    from PIL import Image

    return Image.fromarray(frame[..., 0], mode="L") if frame.shape[-1] == 1 else Image.fromarray(frame[..., :3])


def write_gif(video: torch.Tensor, path: str | Path, fps: int = 8, pad: int = 1, scale: int = 1) -> Path:
    """Animated GIF of a batch (clips side by side, ``pad`` white columns between), looping.

    ``scale`` repeats every pixel (nearest neighbour); ``auto_scale(H)`` gives >= 96 px frames.
    """
    frames = [_pil(f) for f in _frames_hwc(_as_batch(video), pad=pad, scale=scale)]

    def write(tmp: Path) -> None:
        frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:], duration=int(1000 / fps), loop=0)

    return atomic_write(Path(path), write)


def write_png_grid(video: torch.Tensor, path: str | Path, pad: int = 1, scale: int = 1) -> Path:
    """PNG grid: one row per sample, one column per frame; ``scale`` as in ``write_gif``."""
    from einops import rearrange

    v = upscale_nearest(to_uint8(_as_batch(video)), scale)
    v = torch.nn.functional.pad(v, (0, pad, 0, pad), value=255) if pad else v
    grid = rearrange(v, "b f c h w -> (b h) (f w) c").numpy()
    img = _pil(grid)
    return atomic_write(Path(path), lambda tmp: img.save(tmp, format="PNG"))


def write_mp4(video: torch.Tensor, path: str | Path, fps: int = 8) -> Path:
    """H.264 mp4 via PyAV (``pip install 'fvdm[video]'``); odd sizes are padded to even."""
    try:
        import av
    except ImportError as exc:
        raise RuntimeError("writing mp4 needs PyAV: pip install 'fvdm[video]' (or use --formats gif,png)") from exc
    frames = _frames_hwc(_as_batch(video), pad=0)

    def write(tmp: Path) -> None:
        h, w = frames[0].shape[:2]
        H, W = h + h % 2, w + w % 2
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = container.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=fps)
            stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
            for fr in frames:
                rgb = fr.repeat(3, axis=-1) if fr.shape[-1] == 1 else fr[..., :3]
                if (H, W) != (h, w):
                    import numpy as np

                    rgb = np.pad(rgb, ((0, H - h), (0, W - w), (0, 0)), mode="edge")
                for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)

    return atomic_write(Path(path), write)


def write_npz(video: torch.Tensor, path: str | Path, **_: Any) -> Path:
    """Every sample as its own clip: ``videos`` uint8 (B, F, C, H, W), what ``fvdm eval --fake`` reads."""
    import numpy as np

    v = to_uint8(_as_batch(video)).numpy()  # (B, F, C, H, W)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a temp name
            np.savez_compressed(f, videos=v)

    return atomic_write(Path(path), write)


def _as_batch(video: torch.Tensor) -> torch.Tensor:
    if video.ndim == 4:
        return video.unsqueeze(0)
    if video.ndim != 5:
        raise ValueError(f"video must be (F, C, H, W) or (B, F, C, H, W), got {tuple(video.shape)}")
    return video


WRITERS: dict[str, Callable[..., Path]] = {
    "gif": write_gif, "png": write_png_grid, "mp4": write_mp4, "npz": write_npz,
}


class AtomicOutputs:
    """Write several files under ``out_dir``; they appear together at the end or not at all.

    >>> with AtomicOutputs(out) as o:
    ...     o.add("i2v.gif", lambda p: write_gif(video, p))

    Not ``fvdm.core.atomic.staged_directory(merge=True)``, though both stage files and rename them in: that
    one stages beside the directory, where ``out_dir`` may have no writable parent, or sit on another
    filesystem (a mounted output folder), across which no rename works; this one stages inside ``out_dir``,
    and renames each file (``name`` may hold subfolders) into a folder that keeps what else it holds. Each
    file is written by its own writer (``atomic_write`` for the media writers); like them, nothing is fsynced.
    """

    def __init__(self, out_dir: str | Path):
        self.out_dir = Path(out_dir)
        self._pending: list[tuple[Path, Path]] = []

    def __enter__(self) -> "AtomicOutputs":
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._tmp = Path(tempfile.mkdtemp(prefix=".fvdm-tmp-", dir=self.out_dir))
        return self

    def add(self, name: str, write: Callable[[Path], Any]) -> Path:
        tmp = self._tmp / name
        tmp.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        final = self.out_dir / name
        self._pending.append((tmp, final))
        return final

    def __exit__(self, exc_type, exc, tb) -> None:
        import shutil

        try:
            if exc_type is None:
                for tmp, final in self._pending:
                    final.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(tmp, final)
        finally:
            shutil.rmtree(self._tmp, ignore_errors=True)


# -- reading user inputs -----------------------------------------------------------------------------

def _fit(img: Any, shape: tuple[int, int, int], what: str, on_mismatch: str) -> torch.Tensor:
    """PIL image -> (C, H, W) float in [-1, 1] matching ``shape``; resize/convert with a warning or raise."""
    import numpy as np
    from PIL import Image

    C, H, W = shape
    mode = {1: "L", 3: "RGB"}.get(C)
    if mode is None:
        raise ValueError(f"the model works on {C}-channel frames (a latent space?): give images through its "
                         "autoencoder, not as files")
    problems = []
    if img.mode != mode:
        problems.append(f"{img.mode} -> {mode}")
    if img.size != (W, H):
        problems.append(f"{img.size[0]}x{img.size[1]} -> {W}x{H}")
    if problems:
        if on_mismatch == "error":
            raise ValueError(f"{what} is {img.size[0]}x{img.size[1]} {img.mode} but the model expects {W}x{H} "
                             f"{mode}; resize it, or pass --on-mismatch resize")
        warnings.warn(f"{what}: converting {', '.join(problems)} to fit the model", stacklevel=3)
        img = img.convert(mode).resize((W, H), Image.BICUBIC)
    a = np.asarray(img, dtype=np.float32)
    a = a[..., None] if a.ndim == 2 else a
    return torch.from_numpy(a).permute(2, 0, 1) / 127.5 - 1.0


def read_image(path: str | Path, shape: tuple[int, int, int], on_mismatch: str = "resize") -> torch.Tensor:
    """Image file -> (C, H, W) in [-1, 1]."""
    from PIL import Image

    import numpy as np
    from PIL import UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                # 16-bit (or 32-bit integer) grey: scale by the bit depth, not clip at 255
                depth = 65535.0 if im.mode.startswith("I;16") or np.asarray(im).max() <= 65535 else 2.0 ** 32 - 1
                a = np.asarray(im, dtype=np.float64) * (255.0 / depth)
                im = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8))
            return _fit(im.convert("RGB") if im.mode not in ("L", "RGB") else im, shape, f"image {path.name}",
                        on_mismatch)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"cannot read image {path} ({type(exc).__name__}: {exc}); give a complete PNG/JPEG file") \
            from exc


# mp4/webm have no grey pixel format: a one-channel clip (fvdm's own write_mp4 included) is stored as RGB
# with equal channels, which comes back equal up to codec rounding. One chroma step of yuv420p moves R or B
# by about 2 levels (BT.601: 1.596 and 2.017 per step); the mpeg4 fallback codec leaves spreads of 3 on
# random grey noise (measured; libx264 leaves none). Up to 4 levels of 255 is grey; a tint the eye sees is more.
GREY_SPREAD = 4


def _is_grey(frames: list[Any]) -> bool:
    """True when every pixel of every RGB frame has channels within ``GREY_SPREAD`` levels of each other."""
    import numpy as np

    for fr in frames:
        a = np.asarray(fr, dtype=np.int16)  # (H, W, 3)
        if int((a.max(-1) - a.min(-1)).max()) > GREY_SPREAD:
            return False
    return True


def _unreadable_video(path: Path) -> ValueError:
    return ValueError(f"cannot read video {path}: not a readable video, or a format this build cannot decode; "
                      f"give a complete {'/'.join(e[1:] for e in VIDEO_EXTS)} file")


def read_video(path: str | Path, shape: tuple[int, int, int], *, min_frames: int = 1, max_frames: int | None = None,
               on_mismatch: str = "resize") -> torch.Tensor:
    """Video file (GIF via Pillow, others via PyAV) -> (F, C, H, W) in [-1, 1], first ``max_frames`` frames.

    A one-channel model reads a grey video (equal channels, see ``GREY_SPREAD``) without a warning; a
    colour one is converted to luma with the usual ``RGB -> L`` warning, since colour is lost."""
    from PIL import Image, ImageSequence, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video not found: {path}")
    frames: list[Any] = []
    if path.suffix.lower() == ".gif":
        try:
            with Image.open(path) as im:
                for fr in ImageSequence.Iterator(im):
                    frames.append(fr.convert("RGB"))
                    if max_frames and len(frames) >= max_frames:
                        break
        except (UnidentifiedImageError, OSError, SyntaxError) as exc:
            raise _unreadable_video(path) from exc
    else:
        try:
            import av
        except ImportError as exc:
            raise RuntimeError(f"reading {path.suffix} needs PyAV: pip install 'fvdm[video]' (or give a GIF)") from exc
        try:
            with av.open(str(path)) as container:
                if not container.streams.video:
                    raise ValueError("no video stream")
                for fr in container.decode(video=0):
                    frames.append(fr.to_image())
                    if max_frames and len(frames) >= max_frames:
                        break
        except (av.error.FFmpegError, OSError, EOFError, ValueError) as exc:
            # PyAV's own text ("[Errno 1094995529] Invalid data found ...") names no fix; the cause stays chained
            raise _unreadable_video(path) from exc
    if len(frames) < min_frames:
        raise ValueError(f"context video {path.name} has {len(frames)} frame(s) but this task needs at least "
                         f"{min_frames}; give a longer video or fewer --context-frames")
    if shape[0] == 1 and _is_grey(frames):
        frames = [fr.convert("L") for fr in frames]  # equal channels: luma is the channel, nothing is lost
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = torch.stack([_fit(f, shape, f"video {path.name}", on_mismatch) for f in frames])
    if caught:
        warnings.warn(str(caught[0].message) + f" (all {len(frames)} frames)", stacklevel=2)
    return out
