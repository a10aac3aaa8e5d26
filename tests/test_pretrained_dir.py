"""fvdm.core.pretrained: strict reading of local diffusers-format weight directories.

Directories are built here from a tiny module's state dict (one file; two shards with a hand-written
index) and by diffusers itself (``save_pretrained(max_shard_size="20KB")``: its real sharded layout).
Every broken case must raise one line that names the file and states the fix.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from fvdm.core.errors import FvdmError
from fvdm.core.pretrained import (
    PretrainedError, PretrainedMissing, check_config, directory_fingerprint, read_config, read_state_dict,
    weight_files,
)

REPO = "Owner/Tiny-Diffusers"
PUBLIC = f"{REPO}, subfolder transformer"
WHAT = "tiny"


def _module() -> nn.Module:
    torch.manual_seed(1)
    m = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    m.register_buffer("steps", torch.arange(5))  # an integer buffer: keeps its dtype under a cast
    return m


def _expected(m: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in m.state_dict().items()}


def _config(folder: Path, **kw) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"_class_name": "Tiny", "num_layers": 3,
                                                    "patch_size": [1, 2, 2], **kw}))


def _single(top: Path, m: nn.Module) -> Path:
    from safetensors.torch import save_file

    folder = top / "transformer"
    _config(folder)
    save_file(m.state_dict(), str(folder / "model.safetensors"))
    return folder


def _sharded(top: Path, m: nn.Module) -> Path:
    """Two shards and an index written by hand, as diffusers names them."""
    from safetensors.torch import save_file

    folder = top / "transformer"
    _config(folder)
    state = m.state_dict()
    keys = sorted(state)
    halves = {"model-00001-of-00002.safetensors": keys[:3], "model-00002-of-00002.safetensors": keys[3:]}
    for name, part in halves.items():
        save_file({k: state[k] for k in part}, str(folder / name))
    weight_map = {k: name for name, part in halves.items() for k in part}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return folder


def _read(folder: Path, m: nn.Module, **kw) -> dict[str, torch.Tensor]:
    return read_state_dict(folder, expected=_expected(m), public_copy=PUBLIC, what=WHAT, **kw)


def _raises(pattern: str, fn, *args, **kw) -> str:
    with pytest.raises(PretrainedError, match=pattern) as info:
        fn(*args, **kw)
    msg = str(info.value)
    assert "\n" not in msg, msg
    return msg


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


def test_error_type_is_an_fvdm_value_error():
    assert issubclass(PretrainedError, FvdmError) and issubclass(PretrainedError, ValueError)


@pytest.mark.parametrize("layout", [_single, _sharded])
def test_round_trip_single_file_and_hand_written_shards(tmp_path, layout):
    m = _module()
    folder = layout(tmp_path, m)
    _equal(_read(folder, m), m.state_dict())
    m2 = _module()
    nn.init.zeros_(m2[0].weight)
    m2.load_state_dict(_read(folder, m2), strict=True)
    _equal(m2.state_dict(), m.state_dict())
    names = [p.name for p in weight_files(folder)]
    assert names == (["model.safetensors"] if layout is _single else
                     ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"])


def test_dtype_casts_floating_tensors_only(tmp_path):
    m = _module()
    state = _read(_single(tmp_path, m), m, dtype=torch.float64)
    assert state["0.weight"].dtype == torch.float64 and state["steps"].dtype == torch.int64
    torch.testing.assert_close(state["0.weight"], m[0].weight.double(), rtol=0, atol=0)


def test_diffusers_own_sharded_layout_round_trips(tmp_path):
    from diffusers import WanTransformer3DModel

    from fvdm.plugins.backbones.wan import WAN_SIZES
    from fvdm.plugins.backbones.wan_common import diffusers_kwargs

    torch.manual_seed(2)
    kwargs = diffusers_kwargs(WAN_SIZES["tiny"], 4)
    ref = WanTransformer3DModel(**kwargs)
    ref.save_pretrained(tmp_path / "transformer", max_shard_size="20KB")
    folder = tmp_path / "transformer"
    assert len(weight_files(folder)) > 1  # really sharded, through diffusers' own index
    config = read_config(tmp_path, "transformer", public_copy=PUBLIC, what=WHAT)
    check_config(config, {"_class_name": "WanTransformer3DModel", **kwargs}, path=folder, public_copy=PUBLIC,
                 what=WHAT)  # patch_size: the tuple wanted equals config.json's list
    fresh = WanTransformer3DModel(**kwargs)
    fresh.load_state_dict(read_state_dict(folder, expected=_expected(fresh), public_copy=PUBLIC, what=WHAT),
                          strict=True)
    _equal(fresh.state_dict(), ref.state_dict())


def test_a_missing_folder_or_config_is_also_a_file_not_found_error_and_a_fix_can_be_given(tmp_path):
    """Plugins that raised FileNotFoundError for a missing folder read it here now: still caught as one."""
    assert issubclass(PretrainedMissing, PretrainedError) and issubclass(PretrainedMissing, FileNotFoundError)
    with pytest.raises(PretrainedMissing, match=r"no directory .*nowhere \(for .*\); get it from the shelf$"):
        read_config(tmp_path / "nowhere", public_copy=PUBLIC, what=WHAT, fix="get it from the shelf")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(PretrainedError, match=r"not valid JSON .*; get it from the shelf$") as info:
        read_config(tmp_path, public_copy=PUBLIC, what=WHAT, fix="get it from the shelf")
    assert not isinstance(info.value, FileNotFoundError)  # present but broken: not a missing file


def test_missing_directory_subfolder_or_config_names_the_path_and_the_download(tmp_path):
    msg = _raises(r"no directory .*nowhere", read_config, tmp_path / "nowhere", "transformer", public_copy=PUBLIC,
                  what=WHAT)
    assert f"huggingface-cli download {REPO} --local-dir {tmp_path / 'nowhere'}" in msg
    assert "fvdm never downloads" in msg and "subfolder transformer" in msg
    _raises(r"has no subfolder 'transformer'.*huggingface-cli download", read_config, tmp_path, "transformer",
            public_copy=PUBLIC, what=WHAT)
    (tmp_path / "transformer").mkdir()
    _raises(r"no .*transformer/config\.json.*fvdm never downloads", read_config, tmp_path, "transformer",
            public_copy=PUBLIC, what=WHAT)
    (tmp_path / "transformer" / "config.json").write_text("{not json")
    _raises(r"config\.json is not valid JSON.*rerun `huggingface-cli download", read_config, tmp_path,
            "transformer", public_copy=PUBLIC, what=WHAT)
    # pointed at the subfolder itself: the fix is its parent, not DIR/transformer/transformer
    (tmp_path / "transformer" / "config.json").write_text("{}")
    msg = _raises(r"is the model's transformer/ folder itself; point it at the directory that holds transformer/",
                  read_config, tmp_path / "transformer", "transformer", public_copy=PUBLIC, what=WHAT)
    assert msg.endswith(str(tmp_path)) and "transformer/transformer" not in msg
    # a description instead of a repo: the fix says what to put where
    _raises(r"put an fvdm backbone directory in", read_config, tmp_path / "none", None,
            public_copy="an fvdm backbone directory", what=WHAT)


def test_another_architecture_or_size_lists_every_difference_and_the_likely_size(tmp_path):
    _config(tmp_path, num_layers=40)
    config = read_config(tmp_path, None, public_copy=PUBLIC, what=WHAT)
    known = {"small": {"num_layers": 3}, "big": {"num_layers": 40}}
    msg = _raises(r"config\.json is another architecture or size: num_layers 40 \(want 3\), ffn_dim absent "
                  r"\(want 8\); it looks like size 'big'.*use the matching size or directory",
                  check_config, config, {"num_layers": 3, "patch_size": (1, 2, 2), "ffn_dim": 8}, path=tmp_path,
                  public_copy=PUBLIC, what=WHAT, known=known)
    assert str(tmp_path / "config.json") in msg
    _raises(r"it looks like a Tiny,", check_config, config, {"num_layers": 3}, path=tmp_path, public_copy=PUBLIC,
            what=WHAT)
    _raises(r"it looks like another size of Tiny,", check_config, config, {"_class_name": "Tiny", "num_layers": 3},
            path=tmp_path, public_copy=PUBLIC, what=WHAT)
    _raises(r"_class_name 'Tiny' \(want 'Wan'\); it looks like a Tiny,", check_config, config,
            {"_class_name": "Wan", "num_layers": 40}, path=tmp_path, public_copy=PUBLIC, what=WHAT)


def test_deleted_shard_is_a_partial_download(tmp_path):
    m = _module()
    folder = _sharded(tmp_path, m)
    (folder / "model-00002-of-00002.safetensors").unlink()
    msg = _raises(r"model\.safetensors\.index\.json names 1 of 2 shards that are absent "
                  r"\(model-00002-of-00002\.safetensors\); the download is partial", _read, folder, m)
    assert f"huggingface-cli download {REPO} --local-dir {tmp_path}" in msg  # the top directory, not the subfolder
    _raises(r"shards that are absent", directory_fingerprint, folder)


def test_shard_lacking_a_key_its_index_maps_to_it(tmp_path):
    m = _module()
    folder = _sharded(tmp_path, m)
    index = folder / "model.safetensors.index.json"
    doc = json.loads(index.read_text())
    doc["weight_map"]["0.bias"] = "model-00002-of-00002.safetensors"  # 0.bias really lives in shard 1
    index.write_text(json.dumps(doc))
    _raises(r"model-00002-of-00002\.safetensors lacks 1 of the \d+ keys model\.safetensors\.index\.json maps to "
            r"it \(0\.bias\); the download is partial or corrupt: rerun `huggingface-cli download", _read, folder, m)


def test_index_without_a_key_leaves_the_shard_holding_an_unmapped_key(tmp_path):
    m = _module()
    folder = _sharded(tmp_path, m)
    index = folder / "model.safetensors.index.json"
    doc = json.loads(index.read_text())
    del doc["weight_map"]["0.bias"]
    index.write_text(json.dumps(doc))
    _raises(r"model-00001-of-00002\.safetensors holds 1 keys model\.safetensors\.index\.json does not map to it "
            r"\(0\.bias\): shards and index come from different downloads", _read, folder, m)


def test_partial_shard_from_diffusers_is_named_with_a_missing_key(tmp_path):
    from diffusers import WanTransformer3DModel
    from safetensors.torch import load_file, save_file

    from fvdm.plugins.backbones.wan import WAN_SIZES
    from fvdm.plugins.backbones.wan_common import diffusers_kwargs

    model = WanTransformer3DModel(**diffusers_kwargs(WAN_SIZES["tiny"], 4))
    model.save_pretrained(tmp_path, max_shard_size="20KB")
    shard = weight_files(tmp_path)[0]
    state = load_file(str(shard))
    dropped = sorted(state)[0]
    del state[dropped]
    save_file(state, str(shard))
    _raises(rf"{shard.name} lacks 1 of the {len(state) + 1} keys .* maps to it \({dropped}\)", read_state_dict,
            tmp_path, expected=_expected(model), public_copy=PUBLIC, what=WHAT)


def test_renamed_key_is_another_architecture(tmp_path):
    m = _module()
    folder = _single(tmp_path, m)
    expected = _expected(m)
    expected["0.kernel"] = expected.pop("0.weight")
    _raises(r"does not match the model: 1 missing keys \(0\.kernel\), 1 unexpected keys \(0\.weight\): weights of "
            r"another architecture", read_state_dict, folder, expected=expected, public_copy=PUBLIC, what=WHAT)


def test_changed_shape_names_the_file_the_key_and_both_shapes(tmp_path):
    m = _module()
    folder = _sharded(tmp_path, m)
    expected = _expected(m)
    expected["2.weight"] = (2, 5)
    msg = _raises(r"2\.weight has shape \(2, 4\) in the file, \(2, 5\) in the model: weights of another size",
                  read_state_dict, folder, expected=expected, public_copy=PUBLIC, what=WHAT)
    assert "model-0000" in msg and ".safetensors" in msg


def test_weight_file_layouts_refused(tmp_path):
    m = _module()
    folder = _single(tmp_path, m)
    shutil.copy(folder / "model.safetensors", folder / "other.safetensors")
    _raises(r"has 2 safetensors files \(model\.safetensors, other\.safetensors\) but no \*\.safetensors\.index\.json",
            weight_files, folder)
    for p in folder.glob("*.safetensors"):
        p.unlink()
    torch.save(m.state_dict(), folder / "diffusion_pytorch_model.bin")
    _raises(r"no \*\.safetensors weights in .*only pickled weights: diffusion_pytorch_model\.bin", weight_files,
            folder)
    (folder / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00garbage!")
    _raises(r"model\.safetensors is not a readable safetensors file .*partial or corrupt", _read, folder, m)


def test_files_the_index_does_not_name_are_ignored(tmp_path):
    m = _module()
    folder = _sharded(tmp_path, m)
    torch.manual_seed(9)
    from safetensors.torch import save_file

    save_file({"0.weight": torch.randn(4, 3)}, str(folder / "model.safetensors"))  # a stale consolidated copy
    assert len(weight_files(folder)) == 2
    _equal(_read(folder, m), m.state_dict())


def test_fingerprint_tracks_config_index_and_shard_sizes_not_the_path(tmp_path):
    m = _module()
    a = _sharded(tmp_path / "a", m)
    b = _sharded(tmp_path / "b", m)
    assert directory_fingerprint(a) == directory_fingerprint(b)
    assert len(directory_fingerprint(a)) == 64
    _config(b, num_layers=4)
    assert directory_fingerprint(a) != directory_fingerprint(b)
    assert directory_fingerprint(a) != directory_fingerprint(_single(tmp_path / "c", m))  # another sharding


def test_truncated_shard_is_caught_at_its_header(tmp_path):
    m = _module()
    folder = _sharded(tmp_path, m)
    shard = folder / "model-00001-of-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:-8])  # an interrupted copy: the header promises more data than is there
    _raises(r"model-00001-of-00002\.safetensors is not a readable safetensors file .*the download is partial or "
            r"corrupt: rerun `huggingface-cli download", _read, folder, m)
