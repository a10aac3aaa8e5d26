"""Reading webdataset tar shards: shard lists, manifests, tar members and a sample's frames.

Both ``pack`` (which writes and inspects shards) and ``webdataset_reader`` (the dataset)
build on this module, and it imports neither, so the two no longer import each other.

A sample is the group of tar members sharing a key (``dir/name`` up to the first dot of
the file name, the webdataset convention). Its frames come from, in order of
preference: a video (``.mp4/.avi/.mkv/.webm/.mov``, decoded with PyAV), an array
(``.npy``, ``.npz``) or numbered images (``key.0000.png``, ``key.0001.jpg``, ... in
natural order). A label comes from ``.cls``/``.label`` (an integer as text) or ``.json``
(``{"label": k}``). ``manifest.json`` beside the shards lists each shard's name, sample
count and sha256.

Shards packed with encoders (``fvdm data pack --autoencoder/--text-encoder``) also hold
``KEY.latent.npy`` (float16 (f, c, h, w)) and ``KEY.text.npy`` (float16 (n, dim): the
caption's own rows, the zero padding left out), and their manifest says what made them;
``packed_encodings`` reads that part of the manifests, ``sample_latent``/``sample_text``
a sample's arrays, and ``same_autoencoder`` decides whether a configured autoencoder is
the one that made the latents.
"""

from __future__ import annotations

import glob as globlib
import io
import json
import os
import re
import tarfile
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from fvdm.plugins.datasets import video_io as vio

_URL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)  # http:, https:, pipe:, s3:, gs:, file:
SHARD_EXTS = (".tar", ".tar.gz", ".tgz")
MANIFEST = "manifest.json"
LATENT = "latent.npy"  # member extension of a clip's packed latent
TEXT = "text.npy"  # member extension of a clip's packed caption embedding
NULL_TEXT = "null_text.npy"  # beside the manifest: the empty prompt's embedding (guidance dropout)
#: autoencoder settings that say where and in what pieces it runs, not what it computes
RUNTIME_KEYS = frozenset({"device", "chunk", "chunk_size", "batch_size"})
PATH_KEYS = frozenset({"path", "pretrained_path"})
# a numbered frame member's extension after the key: "0003.png", or "x.0003.jpg" for keys with dots
FRAME_MEMBER = re.compile(r"^(?:.*\.)?(\d+)\.(" + "|".join(e[1:] for e in vio.IMAGE_EXTS) + r")$")

# pick(num_available, member name for errors) -> frame indices; None takes every frame
Pick = Callable[[int, str], np.ndarray]


def is_remote(url: str) -> bool:
    """A URL webdataset opens (http:, s3:, pipe:, ...), as opposed to a local path or ``file:`` URL."""
    return bool(_URL.match(url)) and not url.startswith("file:")


# -- shard lists and manifests --------------------------------------------------------------
def load_manifest(path: "str | Path") -> dict[str, Any]:
    """The parsed ``manifest.json`` at ``path`` (written by ``fvdm data pack`` / ``make-digits``)."""
    return json.loads(Path(path).read_text())


def manifest_entries(shards: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Shard path -> its entry (``name, samples, bytes, sha256``) in the manifest.json beside it,
    for the local shards that have one."""
    out: dict[str, dict[str, Any]] = {}
    for d in {str(Path(s).parent) for s in shards if not is_remote(s)}:
        m = Path(d) / MANIFEST
        if m.is_file():
            for s in load_manifest(m).get("shards", []):
                out[str(Path(d) / s["name"])] = s
    return out


def manifest_checksums(shards: Iterable[str]) -> dict[str, str]:
    """Shard path -> sha256 from the manifest.json beside each local shard."""
    return {s: e.get("sha256", "") for s, e in manifest_entries(shards).items()}


def expand_urls(urls: "str | list[str]") -> list[str]:
    """Paths, directories (their ``*.tar``), globs, ``manifest.json`` files, brace patterns
    (``data-{000..009}.tar``) and URLs -> a flat list of shard names, order preserved."""
    from braceexpand import braceexpand

    items = [urls] if isinstance(urls, str) else list(urls)
    out: list[str] = []
    for item in items:
        for u in (p for part in str(item).split("::") for p in braceexpand(part)):
            if is_remote(u):
                out.append(u)
                continue
            u = u[5:] if u.startswith("file:") else u
            p = Path(u).expanduser()
            if p.is_dir():
                if (p / MANIFEST).is_file():
                    out += _listed_shards(p / MANIFEST)
                else:
                    out += sorted(str(q) for q in p.iterdir() if q.name.endswith(SHARD_EXTS))
            elif p.name.endswith(".json") and p.is_file():
                out += _listed_shards(p)
            elif any(c in u for c in "*?["):
                out += sorted(globlib.glob(str(p)))
            else:
                out.append(str(p))
    return out


def _listed_shards(manifest: Path) -> list[str]:
    return [str(manifest.parent / s["name"]) for s in load_manifest(manifest).get("shards", [])]


# -- tar members ------------------------------------------------------------------------------
def open_shard(url: str):
    """A readable binary stream for a local path or any URL webdataset's ``gopen`` knows."""
    if is_remote(url):
        import webdataset as wds

        return wds.gopen(url, "rb")
    path = url[5:] if url.startswith("file:") else url
    if not os.path.exists(path):
        raise vio.BadSampleError(url, "shard file not found", "corrupt")
    return open(path, "rb")


def split_key(member_name: str) -> tuple[str, str]:
    """'a/b/clip_01.0003.png' -> ('a/b/clip_01', '0003.png') (webdataset's key rule)."""
    d, base = os.path.split(member_name)
    stem, dot, ext = base.partition(".")
    return (f"{d}/{stem}" if d else stem), ext.lower()


def iter_tar_samples(url: str) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Stream ``(key, {ext: bytes})`` groups from one shard.

    A corrupt or truncated shard raises :class:`BadSampleError` after every complete
    sample before the damage was yielded (a sample is complete once the next sample's
    header has been read); the damaged sample is dropped.
    """
    stream = None
    try:
        stream = open_shard(url)
        with tarfile.open(fileobj=stream, mode="r|*") as tar:
            key, files = None, {}
            for member in tar:
                if not member.isfile():
                    continue
                k, ext = split_key(member.name)
                if k.startswith(".") or not ext or os.path.basename(k).startswith("_"):
                    continue  # hidden files and webdataset metadata (__key__...)
                if key is not None and k != key:
                    # the next sample's header means the pending one is complete: hand it on before reading
                    # on (a cut inside the next sample must not take this one with it)
                    yield key, files
                    files = {}
                f = tar.extractfile(member)
                data = f.read() if f is not None else b""
                if len(data) != member.size:
                    raise EOFError(f"member {member.name} truncated ({len(data)} of {member.size} bytes)")
                key = k
                files[ext] = data
            if key is not None:
                yield key, files
    except vio.BadSampleError:
        raise
    except (tarfile.TarError, EOFError, OSError, ValueError, Exception) as exc:  # noqa: B014 - any read error
        raise vio.BadSampleError(url, f"corrupt or truncated shard ({type(exc).__name__}: {exc})", "corrupt") from None
    finally:
        if stream is not None:
            try:
                stream.close()
            except Exception:
                pass


# -- one sample -> frames and label ------------------------------------------------------------
def has_frames(files: dict[str, bytes]) -> bool:
    """Whether a sample holds pixel frames ``read_frames`` can read (a latents-only sample does not)."""
    return any("." + e in vio.VIDEO_EXTS or e in ("npy", "npz") or FRAME_MEMBER.match(e) for e in files)


def read_frames(key: str, files: dict[str, bytes], where: str, pick: Pick | None = None) -> np.ndarray:
    """A sample's frames -> uint8 (T, H, W, C): every frame, or only those ``pick`` chooses.

    The one place that decides which members hold the frames (video, then array, then
    numbered images); ``pick`` sees the frame count before anything is decoded that it
    does not choose."""
    name = f"{where}:{key}"
    video_ext = next((e for e in files if "." + e in vio.VIDEO_EXTS), None)
    if video_ext is not None:
        vname = f"{name}.{video_ext}"
        return vio.decode_clip(files[video_ext], None if pick is None else (lambda n: pick(n, vname)), name=vname)
    array_ext = next((e for e in ("npy", "npz") if e in files), None)
    if array_ext is not None:
        aname = f"{name}.{array_ext}"
        frames = vio.load_array(files[array_ext], aname)
        return frames if pick is None else frames[pick(len(frames), aname)]
    images = sorted((e for e in files if FRAME_MEMBER.match(e)), key=vio.natural_key)
    if not images:
        raise vio.BadSampleError(name, f"no video, array or numbered frames among {sorted(files)}", "format")
    idx = range(len(images)) if pick is None else pick(len(images), name)
    frames = [vio.decode_image(files[images[i]], name=f"{name}.{images[i]}") for i in idx]
    if len({f.shape for f in frames}) > 1:
        raise vio.BadSampleError(name, "frame images differ in size", "image")
    return np.stack(frames)


def sample_frames(key: str, files: dict[str, bytes], *, num_frames: int, stride: int, offset: str,
                  rng: np.random.Generator, where: str) -> np.ndarray:
    """One clip's frames of a sample -> uint8 (num_frames, H, W, C) (``offset`` as in ``clip_indices``)."""
    return read_frames(key, files, where,
                       lambda n, src: vio.clip_indices(n, num_frames, stride, offset, rng, src))


def all_frames(key: str, files: dict[str, bytes], shard: str) -> np.ndarray:
    """Every frame of one sample -> uint8 (T, H, W, C)."""
    return read_frames(key, files, shard)


def sample_label(files: dict[str, bytes], name: str) -> int:
    """The integer label of a sample, from ``.cls``/``.label``/``.cls.txt`` or ``.json``'s ``label``."""
    for ext in ("cls", "label", "cls.txt"):
        if ext in files:
            try:
                return int(files[ext].decode().strip())
            except ValueError:
                raise vio.BadSampleError(name, f".{ext} is not an integer: {files[ext][:20]!r}", "format") from None
    if "json" in files:
        try:
            meta = json.loads(files["json"])
            if "label" in meta:
                return int(meta["label"])
        except (ValueError, TypeError):
            pass
    raise vio.BadSampleError(name, "num_classes > 0 but the sample has no .cls/.label/.json label", "format")


def iter_samples_uint8(urls: "str | list[str]") -> Iterator[tuple[str, np.ndarray]]:
    """All frames of every sample, for tests and tools: ``(key, uint8 (T, H, W, C))``."""
    for shard in expand_urls(urls):
        for key, files in iter_tar_samples(shard):
            yield key, all_frames(key, files, shard)


# -- packed latents and text embeddings ---------------------------------------------------------
def load_float_array(data: bytes, name: str, ndim: int) -> np.ndarray:
    """A packed ``.npy`` float array of ``ndim`` axes (latent, text rows), as stored (float16)."""
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise vio.BadSampleError(name, f"unreadable array ({type(exc).__name__}: {exc})", "corrupt") from None
    if arr.ndim != ndim or not np.issubdtype(arr.dtype, np.floating):
        raise vio.BadSampleError(name, f"expected a {ndim}-axis float array, got {arr.dtype} {arr.shape}", "format")
    return arr


def sample_latent(files: dict[str, bytes], name: str, shape: list[int]) -> np.ndarray:
    """A sample's packed latent -> float32 (f, c, h, w), checked against the manifest's ``latent_shape``."""
    if LATENT not in files:
        raise vio.BadSampleError(name, f"no .{LATENT} member although the manifest lists latents", "format")
    z = load_float_array(files[LATENT], f"{name}.{LATENT}", 4)
    if list(z.shape) != list(shape):
        raise vio.BadSampleError(name, f"latent is {list(z.shape)}, the manifest says {list(shape)}", "format")
    return z.astype(np.float32)


def pad_text(rows: np.ndarray, max_length: int, dim: int, name: str) -> np.ndarray:
    """A prompt's own rows (n, dim) -> float32 (max_length, dim), zero rows past them (the encoder's padding)."""
    if rows.ndim != 2 or rows.shape[1] != dim or rows.shape[0] > max_length:
        raise vio.BadSampleError(name, f"text embedding is {list(rows.shape)}; the manifest says at most "
                                 f"{max_length} rows of dim {dim}", "format")
    out = np.zeros((max_length, dim), np.float32)
    out[: rows.shape[0]] = rows
    return out


def sample_text(files: dict[str, bytes], name: str, max_length: int, dim: int) -> np.ndarray:
    """A sample's packed caption embedding -> float32 (max_length, dim), zero-padded."""
    if TEXT not in files:
        raise vio.BadSampleError(name, f"no .{TEXT} member although the manifest lists text embeddings", "format")
    return pad_text(load_float_array(files[TEXT], f"{name}.{TEXT}", 2), max_length, dim, f"{name}.{TEXT}")


def sample_meta(files: dict[str, bytes]) -> dict[str, Any]:
    """A sample's ``.json`` provenance (source, start, caption, ...); ``{}`` when absent or unreadable."""
    try:
        meta = json.loads(files["json"]) if "json" in files else {}
    except ValueError:
        return {}
    return meta if isinstance(meta, dict) else {}


def packed_encodings(shards: Iterable[str]) -> dict[str, Any] | None:
    """What the manifests beside the local shards say about their encodings, or None without a manifest.

    ``{"latents": dict | None, "text": dict | None, "pixels": bool, "frames": int, "frame_size": [F, H, W, C],
    "captions": int (captioned clips), "dir": folder of the first manifest (holds null_text.npy)}``. Shards
    from several folders must agree on latents and text: a batch cannot mix two autoencoders' latents."""
    found: list[tuple[str, dict[str, Any]]] = []
    for d in dict.fromkeys(str(Path(s).parent) for s in shards if not is_remote(s)):
        m = Path(d) / MANIFEST
        if m.is_file():
            man = load_manifest(m)
            found.append((d, {"latents": man.get("latents"), "text": man.get("text"),
                              "pixels": bool(man.get("pixels", True)), "frames": man.get("frames"),
                              "frame_size": man.get("frame_size"),
                              "captions": int((man.get("captions") or {}).get("clips", 0)), "dir": d}))
    if not found:
        return None
    first_dir, first = found[0]
    for d, other in found[1:]:
        for field in ("latents", "text", "pixels", "frame_size"):
            if other[field] != first[field]:
                raise ValueError(f"webdataset: shards in {first_dir} and {d} differ in their packed {field}; read "
                                 "them as separate datasets or re-pack them with the same settings")
    first["captions"] = sum(f["captions"] for _, f in found)
    return first


def same_autoencoder(packed: dict[str, Any], spec: dict[str, Any], packed_fingerprint: str | None = None,
                     fingerprint: str | None = None) -> bool:
    """Whether autoencoder ``spec`` makes the latents ``packed`` (the manifest's spec) made.

    Same name, and every setting both specs have equal, except ``RUNTIME_KEYS`` (placement and chunking do
    not change latents). When both fingerprints are known and equal, paths may differ too (the same weights
    copied elsewhere). Settings only one spec has are left out: a plugin that gained a setting since the
    pack still matches its old manifest."""
    if packed.get("name") != spec.get("name"):
        return False
    ignored = RUNTIME_KEYS | (PATH_KEYS if packed_fingerprint and packed_fingerprint == fingerprint else frozenset())
    shared = (set(packed) & set(spec)) - ignored - {"name"}
    return all(packed[k] == spec[k] for k in shared)
