"""GIF / PNG grid writers: nearest-neighbour upscaling keeps every pixel value and scales the layout exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fvdm.core.media import auto_scale, upscale_nearest, write_gif, write_png_grid


def test_auto_scale_reaches_96_px():
    assert [auto_scale(h) for h in (16, 32, 48, 64, 96, 100)] == [6, 3, 2, 2, 1, 1]
    assert all(h * auto_scale(h) >= 96 for h in range(1, 200))


def test_upscale_repeats_pixels():
    v = torch.arange(2 * 3 * 1 * 2 * 2, dtype=torch.uint8).reshape(2, 3, 1, 2, 2)
    up = upscale_nearest(v, 3)
    assert up.shape == (2, 3, 1, 6, 6)
    assert torch.equal(up[..., ::3, ::3], v) and torch.equal(up[..., 2::3, 1::3], v)
    with pytest.raises(ValueError, match=">= 1"):
        upscale_nearest(v, 0)


def test_png_grid_and_gif_sizes(tmp_path):
    g = torch.Generator().manual_seed(0)
    video = torch.rand(2, 4, 1, 8, 8, generator=g) * 2 - 1  # (B, F, C, H, W)
    png = Image.open(write_png_grid(video, tmp_path / "g.png", pad=0, scale=3))
    assert png.size == (4 * 8 * 3, 2 * 8 * 3)  # (W, H): frames across, clips down
    arr = np.asarray(png)
    expect = ((video[0, 0, 0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    assert (arr[:24:3, :24:3] == expect).all()  # upscaled pixels are the original values, unblended
    gif = Image.open(write_gif(video, tmp_path / "g.gif", pad=0, scale=4))
    assert gif.size == (2 * 8 * 4, 8 * 4) and gif.n_frames == 4


def test_non_finite_videos_are_refused_not_written_black(tmp_path):
    video = torch.zeros(1, 2, 1, 4, 4)
    video[0, 1, 0, 2, 2] = float("nan")
    with pytest.raises(ValueError, match="1 non-finite value"):
        write_png_grid(video, tmp_path / "g.png")
    assert not list(tmp_path.iterdir())


def test_16_bit_png_is_scaled_by_bit_depth(tmp_path):
    from fvdm.core.media import read_image

    a = np.array([[0, 65535], [32896, 16448]], dtype=np.uint16)  # 0, max, ~half, ~quarter
    Image.fromarray(a).save(tmp_path / "x.png")  # saved as a 16-bit grey PNG (mode I;16)
    img = read_image(tmp_path / "x.png", (1, 2, 2))  # (C, H, W) in [-1, 1]
    expect = torch.tensor([[0, 255], [128, 64]], dtype=torch.float32) / 127.5 - 1
    torch.testing.assert_close(img[0], expect)


def test_truncated_or_non_image_file_is_one_line(tmp_path):
    from fvdm.core.media import read_image

    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(good)
    (tmp_path / "cut.png").write_bytes(good.read_bytes()[:40])
    (tmp_path / "text.png").write_text("not an image")
    for name in ("cut.png", "text.png"):
        with pytest.raises(ValueError, match="cannot read image .*give a complete PNG/JPEG"):
            read_image(tmp_path / name, (1, 8, 8))


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_outputs_get_the_mode_the_umask_gives(tmp_path, umask):
    """mkstemp's private 0600 must not leak into the GIF/PNG/MP4 a user shares (the JSON beside them is 0644)."""
    import os

    from fvdm.core.media import WRITERS, AtomicOutputs

    video = torch.zeros(1, 2, 1, 8, 8)
    old = os.umask(umask)
    try:
        with AtomicOutputs(tmp_path) as o:
            o.add("a.gif", lambda p: write_gif(video, p))
            o.add("a.png", lambda p: write_png_grid(video, p))
            o.add("a.npz", lambda p: WRITERS["npz"](video, p))
            o.add("a.json", lambda p: p.write_text("{}"))
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    assert modes == dict.fromkeys(["a.gif", "a.png", "a.npz", "a.json"], 0o666 & ~umask)


def test_outputs_stage_inside_the_folder_and_keep_what_else_it_holds(tmp_path):
    """Staged in out_dir itself (never beside it: no writable parent or same filesystem needed there); files,
    subfolders included, join what the folder already holds; on an error none appears."""
    from fvdm.core.media import AtomicOutputs

    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "sub" / "old.txt").write_text("kept")
    with AtomicOutputs(out) as o:
        assert o._tmp.parent == out
        o.add("a.json", lambda p: p.write_text("{}"))
        o.add("sub/b.json", lambda p: p.write_text("[]"))
        assert not (out / "a.json").exists()  # nothing appears before the end
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # nothing was staged beside it
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == ["a.json", "sub", "sub/b.json", "sub/old.txt"]
    with pytest.raises(RuntimeError):
        with AtomicOutputs(out) as o:
            o.add("c.json", lambda p: p.write_text("{}"))
            raise RuntimeError("a later writer failed")
    assert not (out / "c.json").exists() and sorted(p.name for p in out.iterdir()) == ["a.json", "sub"]


def test_a_file_that_is_not_a_video_is_one_line_naming_it_and_the_formats(tmp_path):
    from fvdm.core.media import read_video

    (tmp_path / "notes.gif").write_text("not a video")  # GIFs go through Pillow: no PyAV needed
    cases = ["notes.gif"]
    try:
        import av  # noqa: F401

        (tmp_path / "notes.mp4").write_text("not a video")
        cases.append("notes.mp4")
    except ImportError:
        pass  # the mp4 case needs PyAV ('fvdm[video]'); the GIF case still runs
    for name in cases:
        with pytest.raises(ValueError) as err:
            read_video(tmp_path / name, (1, 8, 8))
        msg = str(err.value)
        assert "\n" not in msg and "Errno" not in msg and str(tmp_path / name) in msg
        assert "not a readable video" in msg and "mp4/webm/mkv/avi/mov/gif" in msg


def frames_rgb(path) -> np.ndarray:
    """Every decoded frame of a video as uint8 (F, H, W, 3), read with PyAV directly (the oracle)."""
    import av

    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def test_a_grey_mp4_written_by_fvdm_reads_into_a_one_channel_model_without_a_warning(tmp_path):
    pytest.importorskip("av", reason="mp4 needs PyAV: pip install 'fvdm[video]'")
    import warnings

    from fvdm.core.media import read_video, write_mp4

    g = torch.Generator().manual_seed(0)
    grey = torch.rand(1, 4, 1, 16, 16, generator=g) * 2 - 1  # (B, F, 1, H, W): mp4 stores it as RGB
    write_mp4(grey, tmp_path / "grey.mp4")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any "converting RGB -> L" fails the test
        back = read_video(tmp_path / "grey.mp4", (1, 16, 16))
    stored = frames_rgb(tmp_path / "grey.mp4")
    assert (stored.max(-1) == stored.min(-1)).all()  # the mp4 really holds equal channels
    assert back.shape == (4, 1, 16, 16)
    torch.testing.assert_close(back[:, 0], torch.from_numpy(stored[..., 0]).float() / 127.5 - 1)


def test_a_colour_mp4_still_warns_when_read_into_a_one_channel_model(tmp_path):
    pytest.importorskip("av", reason="mp4 needs PyAV: pip install 'fvdm[video]'")
    from fvdm.core.media import read_video, write_mp4

    colour = torch.zeros(1, 4, 3, 16, 16)
    colour[:, :, 0] = 0.8  # red: channels differ by ~100 levels
    write_mp4(colour, tmp_path / "red.mp4")
    with pytest.warns(UserWarning, match=r"converting RGB -> L to fit the model \(all 4 frames\)"):
        back = read_video(tmp_path / "red.mp4", (1, 16, 16))
    stored = frames_rgb(tmp_path / "red.mp4").astype(np.float64)
    luma = stored @ np.array([0.299, 0.587, 0.114])  # ITU-R 601, what PIL's convert("L") uses
    assert np.abs((back[:, 0].numpy() + 1) * 127.5 - luma).max() <= 1.0
