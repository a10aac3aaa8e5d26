"""Tensor helpers and CLI help."""

from __future__ import annotations

import pytest
import torch

from fvdm.cli import COMMANDS, main
from fvdm.core.tensor import append_dims, check_timesteps, check_video


@pytest.mark.parametrize("b", [1, 3])
def test_append_dims_keeps_batch_of_one(b):
    t = torch.rand(b, 16)
    x = torch.randn(b, 16, 4, 8, 8)
    out = append_dims(t, x.ndim)
    assert out.shape == (b, 16, 1, 1, 1)
    assert torch.equal((out * x)[:, 3], t[:, 3, None, None, None] * x[:, 3])
    with pytest.raises(ValueError):
        append_dims(x, 2)


def test_check_video_and_timesteps_messages():
    x = torch.randn(2, 4, 3, 8, 8)
    check_video(x)
    with pytest.raises(ValueError, match=r"x\[None\]"):
        check_video(x[0])
    with pytest.raises(TypeError, match="uint8"):
        check_video(x.to(torch.uint8))
    with pytest.raises(ValueError, match="expected 1"):
        check_video(x, channels=1)
    check_timesteps(torch.rand(2, 4), x)
    with pytest.raises(ValueError, match=r"observed \[.*2"):
        check_timesteps(torch.full((2, 4), 2.0), x)
    with pytest.raises(TypeError, match="n / \\(T - 1\\)"):
        check_timesteps(torch.zeros(2, 4, dtype=torch.long), x)
    with pytest.raises(ValueError, match=r"\(B, F\)"):
        check_timesteps(torch.rand(2, 5), x)


@pytest.mark.parametrize("cmd", COMMANDS)
def test_every_command_has_help(cmd, capsys):
    with pytest.raises(SystemExit) as exc:
        main([cmd, "--help"])
    assert exc.value.code == 0
    assert "usage: fvdm " + cmd in capsys.readouterr().out


def test_write_npz_keeps_every_sample_for_eval(tmp_path):
    import numpy as np

    from fvdm.core.media import write_npz
    from fvdm.plugins.evaluators.metric import _npz_kind

    video = torch.rand(3, 4, 1, 8, 8) * 2 - 1  # (B, F, C, H, W) in [-1, 1]
    path = write_npz(video, tmp_path / "s.npz", fps=8)
    assert _npz_kind(path) == "videos"
    with np.load(path) as z:
        v = z["videos"]
    assert v.shape == (3, 4, 1, 8, 8) and v.dtype == np.uint8
    np.testing.assert_array_equal(v, ((video.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy())
    assert [p.name for p in tmp_path.iterdir()] == ["s.npz"]  # atomic: no temp file left
