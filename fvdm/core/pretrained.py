"""Strict reading of local diffusers-format weight directories (config.json + safetensors), never downloading.

A diffusers-format model folder (a repo's ``transformer/`` subfolder, or an fvdm backbone directory)
holds ``config.json`` and its weights either as one ``*.safetensors`` file or as shards named by an
index ``*.safetensors.index.json`` (``{"metadata": ..., "weight_map": {key: shard file name}}``).
Loading such a folder loosely (``load_state_dict(strict=False)``, or trusting a glob of shards) turns
a partial download, another model size or another architecture into a model that silently runs on
random weights. This module reads it strictly instead and says, in one line, what is wrong and how to
fix it:

* ``read_config`` / ``check_config``: the folder and its config.json exist (else ``PretrainedMissing``, also a
  FileNotFoundError), and the config has the architecture the caller builds (else: which keys differ, and
  which known size the file looks like);
* ``weight_files``: which files hold the weights (the index's shards, all present; or the one file;
  files an index does not name are ignored, as diffusers ignores them);
* ``read_state_dict``: every key and shape is checked from the safetensors headers alone (no tensor
  data read) against the model's, then the tensors are read one at a time (optionally cast), so
  nothing reaches the caller's model unless the whole folder is right;
* ``directory_fingerprint``: a cheap identity of exactly the files read, for provenance;
* ``weights_follow``: the build's promise to a backbone being constructed that every weight is read from
  the folder right after, so it may build them empty (meta device) instead of drawing random values.

``public_copy`` names where the weights come from, for the fix in each message:
``"owner/name, subfolder S"`` (or ``"owner/name"``) for a Hugging Face repo, which yields the
``huggingface-cli download`` command; any other text is a description of what belongs there.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Collection, Iterator, Mapping

from fvdm.core.errors import FvdmError

if TYPE_CHECKING:
    import torch

#: file names shown per list in a message (one line, however many keys a wrong folder has)
SHOWN = 3

#: True while ``build_model`` constructs a backbone whose ``pretrained`` it reads right afterwards: a random
#: initialisation would only be overwritten (half of a 1.3B Wan load), so a backbone may skip it
_WEIGHTS_FOLLOW: contextvars.ContextVar[bool] = contextvars.ContextVar("fvdm_weights_follow", default=False)


@contextlib.contextmanager
def weights_follow() -> Iterator[None]:
    """Within: the backbone being constructed gets every weight from its ``pretrained`` folder next.

    Only the caller that reads the folder right after construction may say so (``build_model``); a backbone
    that builds empty weights here must fill them in its ``load_pretrained``. Backbones that ignore it
    are built and loaded as before."""
    token = _WEIGHTS_FOLLOW.set(True)
    try:
        yield
    finally:
        _WEIGHTS_FOLLOW.reset(token)


def weights_follow_now() -> bool:
    """Inside ``weights_follow``: the weights being constructed are read from a folder before any use."""
    return _WEIGHTS_FOLLOW.get()


_REPO = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class PretrainedError(FvdmError, ValueError):
    """A local weight directory is missing, partial, corrupt, or holds another model; the message says which."""


class PretrainedMissing(PretrainedError, FileNotFoundError):
    """The directory, its subfolder or its config.json is absent: a FileNotFoundError too, as plugins that read
    their folders raised before they read them here (``except FileNotFoundError`` keeps catching it)."""


# -- messages --------------------------------------------------------------------------------------

def _fix(public_copy: str, folder: Path, *, partial: bool = False) -> str:
    """The fix for a missing or partial ``folder``: the download command for a repo, else what to put there."""
    repo, _, rest = (part.strip() for part in public_copy.partition(","))
    if _REPO.match(repo):
        # a repo's download holds the subfolder: --local-dir is the folder above it
        sub = re.fullmatch(r"subfolder\s+(\S+)", rest)
        local_dir = folder.parent if sub and folder.name == sub.group(1) else folder
        verb = "the download is partial or corrupt: rerun" if partial else "fvdm never downloads: run"
        return f"{verb} `huggingface-cli download {repo} --local-dir {local_dir}`" + (f" ({rest})" if rest else "")
    if partial:
        return f"the directory is partial or corrupt: write {public_copy} to {folder} again"
    return f"fvdm never downloads: put {public_copy} in {folder}"


def _few(names: Any) -> str:
    names = sorted(names)
    return ", ".join(names[:SHOWN]) + (f", ... ({len(names) - SHOWN} more)" if len(names) > SHOWN else "")


def _plain(v: Any) -> Any:
    """JSON's view of a value: tuples are lists (config.json stores ``patch_size`` (1, 2, 2) as [1, 2, 2])."""
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, Mapping):
        return {k: _plain(x) for k, x in v.items()}
    return v


# -- config ----------------------------------------------------------------------------------------

def read_config(directory: str | Path, subfolder: str | None = None, *, public_copy: str, what: str,
                fix: str | None = None) -> dict[str, Any]:
    """The parsed ``directory/subfolder/config.json``; a missing folder or file (``PretrainedMissing``), or bad
    JSON, raises.

    ``fix``: what each message tells the user to do, for a copy ``public_copy`` cannot name as one repo and
    subfolder (a text encoder's two subfolders, downloaded with ``--include``); None: derived from it.
    """
    top = Path(directory).expanduser()
    folder = top / subfolder if subfolder else top

    def remedy(partial: bool = False) -> str:
        return fix if fix is not None else _fix(public_copy, folder, partial=partial)

    if not top.is_dir():
        raise PretrainedMissing(f"{what}: no directory {top} (for {public_copy}); {remedy()}")
    if not folder.is_dir() and subfolder and top.name == subfolder and (top / "config.json").is_file():
        raise PretrainedMissing(f"{what}: {top} is the model's {subfolder}/ folder itself; point it at the "
                                f"directory that holds {subfolder}/: {top.parent}")
    if not folder.is_dir():
        raise PretrainedMissing(f"{what}: {top} has no subfolder {subfolder!r} (for {public_copy}); {remedy()}")
    path = folder / "config.json"
    if not path.is_file():
        raise PretrainedMissing(f"{what}: no {path} (for {public_copy}); {remedy()}")
    try:
        config = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PretrainedError(f"{what}: {path} is not valid JSON ({exc}); {remedy(partial=True)}") from exc
    if not isinstance(config, dict):
        raise PretrainedError(f"{what}: {path} holds a JSON {type(config).__name__}, not an object of model "
                              f"settings; {remedy(partial=True)}")
    return config


def check_config(config: Mapping[str, Any], want: Mapping[str, Any], *, path: str | Path, public_copy: str,
                 what: str, known: Mapping[str, Mapping[str, Any]] | None = None) -> None:
    """Every key of ``want`` equals the config's (lists and tuples alike); else one line naming every difference.

    ``path``: the folder holding the config.json. ``known``: named settings (e.g. every size of a table);
    the first that the file matches on all its keys is named as what the file looks like.
    """
    bad = [k for k, v in want.items() if k not in config or _plain(config[k]) != _plain(v)]
    if not bad:
        return
    diffs = ", ".join(f"{k} {config[k]!r} (want {want[k]!r})" if k in config else f"{k} absent (want {want[k]!r})"
                      for k in bad)
    names = [n for n, spec in (known or {}).items()
             if all(k in config and _plain(config[k]) == _plain(v) for k, v in spec.items())]
    cls = config.get("_class_name")
    if names:
        guess = f"size {names[0]!r}"
    elif cls:
        guess = f"another size of {cls}" if "_class_name" in want and "_class_name" not in bad else f"a {cls}"
    else:
        guess = "an unknown model (no _class_name)"
    raise PretrainedError(f"{what}: {Path(path) / 'config.json'} is another architecture or size: {diffs}; it looks "
                          f"like {guess}, not {public_copy}; use the matching size or directory")


# -- weights ---------------------------------------------------------------------------------------

def _layout(folder: Path, public_copy: str, what: str) -> tuple[list[Path], Path | None, dict[str, str] | None]:
    """(weight files, index file or None, index weight_map or None), every named shard present."""
    fix = _fix(public_copy, folder, partial=True)
    if not folder.is_dir():
        raise PretrainedError(f"{what}: no directory {folder} (for {public_copy}); "
                              f"{_fix(public_copy, folder)}")
    indexes = sorted(folder.glob("*.safetensors.index.json"))
    if len(indexes) > 1:
        raise PretrainedError(f"{what}: {folder} has {len(indexes)} safetensors indexes "
                              f"({_few(p.name for p in indexes)}); keep the one of the weights you mean, move the rest")
    if indexes:
        index = indexes[0]
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise PretrainedError(f"{what}: {index} is not a safetensors index (JSON with a weight_map: "
                                  f"{type(exc).__name__}: {exc}); {fix}") from exc
        if not isinstance(weight_map, dict) or not weight_map:
            raise PretrainedError(f"{what}: {index} has an empty or malformed weight_map; {fix}")
        names = set(weight_map.values())
        outside = [n for n in names if not isinstance(n, str) or Path(n).name != n]
        if outside:
            raise PretrainedError(f"{what}: {index} maps weights to {outside[0]!r}, not a file name in {folder}; "
                                  f"{fix}")
        absent = [n for n in names if not (folder / n).is_file()]
        if absent:
            raise PretrainedError(f"{what}: {index} names {len(absent)} of {len(names)} shards that are absent "
                                  f"({_few(absent)}); {fix}")
        # Files the index does not name are ignored: the index is what diffusers itself reads, a download may
        # also carry other copies (a consolidated file, a variant), and read_state_dict still checks that
        # every key the model needs is there, so an ignored file cannot hide a missing weight.
        return [folder / n for n in sorted(names)], index, weight_map
    files = sorted(folder.glob("*.safetensors"))
    if len(files) > 1:
        raise PretrainedError(f"{what}: {folder} has {len(files)} safetensors files ({_few(p.name for p in files)}) "
                              "but no *.safetensors.index.json naming which are shards of one model; restore the "
                              "index or keep one file")
    if not files:
        pickled = sorted(p.name for p in folder.glob("*.bin")) + sorted(p.name for p in folder.glob("*.pt*"))
        kind = f" (only pickled weights: {_few(pickled)}; fvdm reads safetensors only)" if pickled else ""
        raise PretrainedError(f"{what}: no *.safetensors weights in {folder}{kind}; "
                              f"{_fix(public_copy, folder)}")
    return files, None, None


def weight_files(folder: str | Path, *, public_copy: str = "the weights", what: str = "pretrained") -> list[Path]:
    """The safetensors files holding ``folder``'s weights: the shards its index names (all present), or its one file."""
    return _layout(Path(folder).expanduser(), public_copy, what)[0]


def _open(path: Path, public_copy: str, what: str) -> Any:
    from safetensors import SafetensorError, safe_open

    try:
        return safe_open(str(path), framework="pt")
    except (SafetensorError, OSError) as exc:
        fix = _fix(public_copy, path.parent, partial=True)
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PretrainedError(f"{what}: {path} is not a readable safetensors file ({why}); {fix}") from exc


def read_state_dict(folder: str | Path, *, expected: Mapping[str, tuple[int, ...]], public_copy: str, what: str,
                    dtype: "torch.dtype | Mapping[str, torch.dtype] | None" = None,
                    copy: bool = False,
                    optional: Mapping[str, Collection[str]] | None = None) -> dict[str, "torch.Tensor"]:
    """``folder``'s weights as a state dict with exactly ``expected``'s keys and shapes, verified before any is read.

    ``expected``: key -> shape of the model to fill (``{k: tuple(v.shape) for k, v in model.state_dict().items()}``).
    ``dtype``: cast floating tensors to it as each is read (integer buffers keep theirs); a mapping gives each
    key its own (a model that keeps some modules in float32); None keeps the file's.
    ``copy``: every tensor in memory of its own. Without it a tensor the cast leaves alone is a copy-on-write
    view of the memory-mapped shard (safetensors), fine for ``load_state_dict``, which copies it into the
    model; a state dict that becomes the model's weights (``assign=True``) must not stay tied to the file.
    ``optional``: module -> its keys, modules the folder may lack as a whole (a model grown from the folder's:
    they keep their initial values); a module the folder holds in part is refused like any missing key.
    Peak memory is the state dict plus one tensor: shards are memory-mapped and read a tensor at a time.
    """
    folder = Path(folder).expanduser()
    files, index, weight_map = _layout(folder, public_copy, what)
    fix = _fix(public_copy, folder, partial=True)
    # 1. headers only: where each key lives and its shape
    where: dict[str, Path] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    stray: dict[Path, set[str]] = {}  # keys a shard holds that the index maps elsewhere or nowhere
    for path in files:
        with _open(path, public_copy, what) as f:
            keys = set(f.keys())
            if weight_map is not None:
                mapped = {k for k, n in weight_map.items() if n == path.name}
                lacking = mapped - keys
                if lacking:  # a truncated or replaced shard: the likelier story, so it is told first
                    raise PretrainedError(f"{what}: {path} lacks {len(lacking)} of the {len(mapped)} keys "
                                          f"{index.name} maps to it ({_few(lacking)}); {fix}")
                stray[path] = keys - mapped
                keys = mapped
            for k in keys:
                where[k], shapes[k] = path, tuple(f.get_slice(k).get_shape())
    for path, keys in stray.items():
        if keys:
            raise PretrainedError(f"{what}: {path} holds {len(keys)} keys {index.name} does not map to it "
                                  f"({_few(keys)}): shards and index come from different downloads; {fix}")
    # 2. against the model: keys, then shapes
    missing, unexpected = set(expected) - set(where), set(where) - set(expected)
    for keys in (optional or {}).values():
        if set(keys) <= missing:  # wholly absent: the folder's model had no such module
            missing -= set(keys)
    if missing or unexpected:
        raise PretrainedError(f"{what}: {folder} does not match the model: {len(missing)} missing keys"
                              f"{' (' + _few(missing) + ')' if missing else ''}, {len(unexpected)} unexpected keys"
                              f"{' (' + _few(unexpected) + ')' if unexpected else ''}: weights of another architecture "
                              f"than {public_copy}; use the matching model or directory")
    wrong = sorted(k for k in expected if k in shapes and shapes[k] != tuple(expected[k]))
    if wrong:
        k = wrong[0]
        more = f" (and {len(wrong) - 1} more keys)" if len(wrong) > 1 else ""
        raise PretrainedError(f"{what}: {where[k]}: {k} has shape {shapes[k]} in the file, {tuple(expected[k])} in "
                              f"the model{more}: weights of another size; use the matching size or directory")
    # 3. the tensors, one at a time
    state: dict[str, torch.Tensor] = {}
    for path in files:
        with _open(path, public_copy, what) as f:
            for k in f.keys():  # every key is the model's and mapped to this shard (checked above)
                tensor = f.get_tensor(k)
                want = dtype.get(k) if isinstance(dtype, Mapping) else dtype
                if want is not None and tensor.is_floating_point() and tensor.dtype != want:
                    tensor = tensor.to(want)  # a cast reads the bytes into a new tensor
                elif copy:
                    tensor = tensor.clone()
                state[k] = tensor
    return state


def directory_fingerprint(folder: str | Path, *, public_copy: str = "the weights", what: str = "pretrained") -> str:
    """Hex sha256 of config.json's bytes, the index's bytes and the (name, size) of each weight file read.

    Cheap on multi-GB folders (no weight bytes are hashed): it tells downloads, sizes and shardings apart
    for provenance, not bit flips; ``fvdm.core.hashing.sha256_file`` hashes a file's content. The folder's
    own path is left out, so a copy elsewhere keeps the fingerprint.
    """
    folder = Path(folder).expanduser()
    files, index, _ = _layout(folder, public_copy, what)
    config = folder / "config.json"

    def digest(p: Path | None) -> str | None:
        return hashlib.sha256(p.read_bytes()).hexdigest() if p is not None and p.is_file() else None

    record = {"config.json": digest(config), "index": digest(index),
              "weights": [[p.name, p.stat().st_size] for p in files]}
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()
