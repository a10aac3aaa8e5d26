"""How an autoencoder maps pixel frames to latent frames, and given pixel frames to given latents.

A per-frame autoencoder keeps one latent per pixel frame. A video VAE with temporal
compression r declares ``temporal_downsample = r``; a causal one (Wan's ``AutoencoderKLWan``)
also declares ``causal = True``: it encodes pixel frame 0 alone as latent 0 and pixel frames
1 + r (j - 1) ... r j as latent j, so 1 + r k pixel frames give 1 + k latents. A non-causal one
maps pixel frames r j ... r j + r - 1 to latent j.

Tasks give frames in pixel space ("the first frame", "frames 0 and 16"), the sampler works on
latents, so a given pixel frame becomes a given latent frame only when every pixel frame of that
latent is given. Image-to-video on a causal VAE works because latent 0 is pixel frame 0 alone. A
context that covers part of a latent is refused: the message lists the pixel frames that would work.
"""

from __future__ import annotations

from typing import Any, Sequence


def temporal_factor(autoencoder: Any) -> tuple[int, bool]:
    """(r, causal) of an autoencoder: ``temporal_downsample`` (absent = 1) and ``causal`` (absent = False)."""
    r = int(getattr(autoencoder, "temporal_downsample", 1) or 1)
    return r, bool(getattr(autoencoder, "causal", False)) and r > 1


def latent_frame_count(autoencoder: Any, pixel_frames: int) -> int:
    """Latent frames for ``pixel_frames`` pixel frames; a count the VAE cannot encode is an error naming valid ones."""
    r, causal = temporal_factor(autoencoder)
    if r == 1:
        return int(pixel_frames)
    if causal:
        if pixel_frames < 1 or (pixel_frames - 1) % r:
            lo = max(1, pixel_frames - 1) // r * r + 1
            raise ValueError(f"{pixel_frames} pixel frames do not encode with a causal VAE of temporal factor {r}: "
                             f"use 1 + {r}k frames (e.g. {lo} or {lo + r})")
        return 1 + (pixel_frames - 1) // r
    if pixel_frames < r or pixel_frames % r:
        lo = max(r, pixel_frames // r * r)
        raise ValueError(f"{pixel_frames} pixel frames do not encode with a VAE of temporal factor {r}: "
                         f"use a multiple of {r} (e.g. {lo} or {lo + r})")
    return pixel_frames // r


def pixel_frame_count(autoencoder: Any, latent_frames: int) -> int:
    """Pixel frames that ``latent_frames`` latents decode to (the inverse of ``latent_frame_count``)."""
    r, causal = temporal_factor(autoencoder)
    return 1 + r * (latent_frames - 1) if causal else r * latent_frames


def pixel_span(autoencoder: Any, latent: int) -> range:
    """The pixel frames latent frame ``latent`` encodes."""
    r, causal = temporal_factor(autoencoder)
    if not causal:
        return range(r * latent, r * latent + r)
    return range(0, 1) if latent == 0 else range(1 + r * (latent - 1), 1 + r * latent)


def latent_of(autoencoder: Any, pixel: int) -> int:
    """The latent frame that pixel frame ``pixel`` belongs to."""
    r, causal = temporal_factor(autoencoder)
    if not causal:
        return pixel // r
    return 0 if pixel == 0 else 1 + (pixel - 1) // r


def latent_positions(autoencoder: Any, pixel_positions: Sequence[int], pixel_frames: int) -> list[int]:
    """Given pixel frames -> the latent frames they make up, in order; a partial latent is refused.

    ``pixel_positions`` must cover whole latents: for a causal factor-4 VAE, ``[0]`` -> ``[0]`` (the
    first frame is encoded alone) and ``[0, 1, 2, 3, 4]`` -> ``[0, 1]``, but ``[0, 1]`` is refused.
    """
    r, _ = temporal_factor(autoencoder)
    given = sorted({int(p) for p in pixel_positions})
    if r == 1:
        return given
    total = latent_frame_count(autoencoder, pixel_frames)
    bad = [p for p in given if not 0 <= p < pixel_frames]
    if bad:
        raise ValueError(f"given pixel frames {bad} are outside the {pixel_frames}-frame clip")
    latents = sorted({latent_of(autoencoder, p) for p in given})
    partial = [j for j in latents if not set(pixel_span(autoencoder, j)) <= set(given)]
    if partial:
        fix = [f"{pixel_span(autoencoder, j).start}..{pixel_span(autoencoder, j).stop - 1}" for j in partial]
        first = " (the first frame alone is latent 0)" if pixel_span(autoencoder, 0).stop == 1 else ""
        raise ValueError(f"given pixel frames {given} cover only part of latent frame(s) {partial} (temporal "
                         f"factor {r}); give whole latents: pixel frames {', '.join(fix)}{first}")
    assert all(j < total for j in latents)
    return latents
