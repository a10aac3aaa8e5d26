"""Pusa V1 LoRA import: key map, exact merge, diffusers' own LoRA path as oracle, 14B shapes on meta, refusals.

No real weights: LoRA state dicts are built from Pusa's key names (DiffSynth/PEFT:
``blocks.{i}.{module}.lora_{A,B}.default.weight``) at the tiny ``wan`` size's shapes, and at the
14B shapes as meta tensors (shape checks only, no memory).
Oracle: diffusers reads DiffSynth's *open-source* export (``diffusion_model.`` prefix, no ``.default``)
through ``WanLoraLoaderMixin.lora_state_dict`` (its non-diffusers Wan converter), then PEFT injection
(``load_lora_adapter``) and ``fuse_lora``; the fused weights and the forward must equal fvdm's merge.
"""

from __future__ import annotations

import copy

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("peft")

from diffusers import WanTransformer3DModel  # noqa: E402
from diffusers.loaders.lora_pipeline import WanLoraLoaderMixin  # noqa: E402

from fvdm.plugins.backbones.pusa_import import (  # noqa: E402
    PUSA_V1, check_lora, diffsynth_to_diffusers, load_pusa_lora, merge_lora, read_lora,
)
from fvdm.plugins.backbones.wan import WAN_SIZES  # noqa: E402
from fvdm.plugins.backbones.wan_common import diffusers_kwargs  # noqa: E402


def _model(size: str = "tiny", meta: bool = False) -> WanTransformer3DModel:
    torch.manual_seed(0)
    if meta:
        with torch.device("meta"):
            return WanTransformer3DModel(**diffusers_kwargs(WAN_SIZES[size], 16))
    return WanTransformer3DModel(**diffusers_kwargs(WAN_SIZES[size], 4)).eval()


def _io(module: str, size: str) -> tuple[int, int]:
    """(out, in) of a Pusa-targeted DiffSynth module at one size."""
    s = WAN_SIZES[size]
    return {"ffn.0": (s.ffn_dim, s.dim), "ffn.2": (s.dim, s.ffn_dim)}.get(module, (s.dim, s.dim))


def _pusa_lora(size: str = "tiny", rank: int = 4, meta: bool = False, seed: int = 1) -> dict[str, torch.Tensor]:
    """Every key Pusa V1's file has (all blocks, all targets), shaped for ``size``; random (or meta) values."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for i in range(WAN_SIZES[size].layers):
        for module in PUSA_V1.targets:
            o, n = _io(module, size)
            for part, shape in (("lora_A", (rank, n)), ("lora_B", (o, rank))):
                key = f"blocks.{i}.{module}.{part}.default.weight"
                out[key] = torch.empty(shape, device="meta") if meta else torch.randn(shape, generator=g) * 0.1
    return out


def _open_source(lora: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """DiffSynth's open-source spelling of the same LoRA: ``diffusion_model.`` prefix, no PEFT adapter name."""
    return {"diffusion_model." + k.replace(".default.", "."): v for k, v in lora.items()}


def test_pusa_facts_match_the_14b_size():
    s = WAN_SIZES[PUSA_V1.fvdm_size]
    assert s.repo == PUSA_V1.base_diffusers == "Wan-AI/Wan2.1-T2V-14B-Diffusers"
    assert (PUSA_V1.rank, PUSA_V1.alpha, PUSA_V1.file) == (512, 512.0, "pusa_v1.pt")
    assert len(PUSA_V1.targets) == 10


def test_key_map_names_real_diffusers_parameters():
    params = dict(_model().named_parameters())
    for i in range(WAN_SIZES["tiny"].layers):
        for module in PUSA_V1.targets:
            assert diffsynth_to_diffusers(f"blocks.{i}.{module}.weight") in params
            assert diffsynth_to_diffusers(f"blocks.{i}.{module}.bias") in params
    for top in ("text_embedding.0", "text_embedding.2", "time_embedding.0", "time_embedding.2",
                "time_projection.1", "head.head"):
        assert diffsynth_to_diffusers(top + ".weight") in params
    assert diffsynth_to_diffusers("blocks.7.self_attn.o") == "blocks.7.attn1.to_out.0"
    assert diffsynth_to_diffusers("blocks.7.ffn.0") == "blocks.7.ffn.net.0.proj"
    assert diffsynth_to_diffusers("blocks.7.cross_attn.v.lora_B.default.weight") == "blocks.7.attn2.to_v.weight"
    assert diffsynth_to_diffusers("diffusion_model.blocks.7.ffn.2.lora_A.weight") == "blocks.7.ffn.net.2.weight"
    with pytest.raises(ValueError, match="'blocks.0.self_attn.norm_q'"):
        diffsynth_to_diffusers("blocks.0.self_attn.norm_q")


def test_key_map_equals_diffusers_converter_table():
    """Every DiffSynth linear fvdm maps goes where diffusers' non-diffusers Wan converter puts it."""
    modules = [f"blocks.{i}.{m}" for i in range(2) for m in PUSA_V1.targets] + [
        "text_embedding.0", "text_embedding.2", "time_embedding.0", "time_embedding.2", "time_projection.1",
        "head.head"]
    sd = {f"diffusion_model.{m}.lora_{p}.weight": torch.zeros(1, 1) for m in modules for p in "AB"}
    converted = WanLoraLoaderMixin.lora_state_dict(sd)
    theirs = sorted(k.removeprefix("transformer.").removesuffix(".lora_A.weight") for k in converted
                    if k.endswith(".lora_A.weight"))
    assert theirs == sorted(diffsynth_to_diffusers(m) for m in modules)


def test_merge_adds_scaled_b_at_a_to_every_target():
    model, lora = _model(), _pusa_lora(rank=4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    alpha, scale = 8.0, 1.4
    adapted = merge_lora(model, lora, alpha=alpha, scale=scale)
    layers = WAN_SIZES["tiny"].layers
    assert len(adapted) == len(set(adapted)) == layers * len(PUSA_V1.targets)
    after = model.state_dict()
    for i in range(layers):
        for module in PUSA_V1.targets:
            name = diffsynth_to_diffusers(f"blocks.{i}.{module}.weight")
            a, b = (lora[f"blocks.{i}.{module}.lora_{p}.default.weight"] for p in "AB")
            want = before[name] + scale * alpha / 4 * b @ a
            assert name in adapted and (after[name] - want).abs().max() <= 1e-6
    untouched = set(after) - set(adapted)
    assert all(torch.equal(after[k], before[k]) for k in untouched)  # biases, norms, embedders unchanged


def test_merge_keeps_the_weight_dtype():
    model, lora = _model().to(torch.bfloat16), _pusa_lora()
    name = merge_lora(model, lora)[0]
    assert dict(model.named_parameters())[name].dtype == torch.bfloat16


def test_diffusers_lora_path_fuses_to_the_same_weights_and_output():
    """Oracle: diffusers' converter + PEFT injection + fuse_lora == fvdm's merge (alpha = rank, scale 1.4)."""
    ours, lora = _model(), _pusa_lora(rank=4)
    theirs = copy.deepcopy(ours)
    # diffusers passes DiffSynth's native PEFT spelling (no prefix) through unconverted: it cannot read it as is
    assert set(WanLoraLoaderMixin.lora_state_dict(dict(lora))) == set(lora)
    converted = WanLoraLoaderMixin.lora_state_dict(_open_source(lora))
    assert len(converted) == len(lora) and all(k.startswith("transformer.blocks.") for k in converted)
    theirs.load_lora_adapter(converted, prefix="transformer", adapter_name="pusa")
    theirs.fuse_lora(lora_scale=1.4)
    theirs.unload_lora()  # drop the (fused) PEFT layers: plain nn.Linear with the fused weights
    merge_lora(ours, lora, scale=1.4)
    theirs_sd = theirs.state_dict()
    for name, value in ours.state_dict().items():
        assert (value - theirs_sd[name]).abs().max() <= 1e-5, name
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 4, 2, 4, 4, generator=g)  # (B, C, F, H, W), diffusers' layout
    t, text = torch.tensor([500.0]), torch.randn(1, 3, WAN_SIZES["tiny"].text_dim, generator=g)
    with torch.no_grad():
        a = ours(x, t, text, return_dict=False)[0]
        b = theirs(x, t, text, return_dict=False)[0]
    assert (a - b).abs().max() <= 1e-5


def test_open_source_spelling_and_prefixes_read_the_same(tmp_path):
    from safetensors.torch import save_file

    lora = _pusa_lora()
    torch.save(lora, tmp_path / "native.pt")
    save_file(_open_source(lora), str(tmp_path / "open.safetensors"))
    save_file({"pipe.dit." + k: v for k, v in lora.items()}, str(tmp_path / "dit.safetensors"))
    merged = []
    for name in ("native.pt", "open.safetensors", "dit.safetensors"):
        model = _model()
        merge_lora(model, read_lora(tmp_path / name))
        merged.append(model.state_dict())
    for other in merged[1:]:
        assert all(torch.equal(merged[0][k], other[k]) for k in merged[0])


def test_load_pusa_lora_reports_provenance(tmp_path):
    import hashlib

    path = tmp_path / PUSA_V1.file
    torch.save(_pusa_lora(rank=4), path)
    report = load_pusa_lora(_model(), path, scale=1.4)
    assert report == {"file": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "rank": 4,
                      "alpha": 4.0, "scale": 1.4, "adapted": WAN_SIZES["tiny"].layers * len(PUSA_V1.targets)}


def test_14b_meta_model_accepts_every_pusa_key_at_rank_512():
    model, lora = _model("wan2.1-t2v-14b", meta=True), _pusa_lora("wan2.1-t2v-14b", rank=512, meta=True)
    targets, rank = check_lora(model, lora)
    assert rank == PUSA_V1.rank and len(targets) * 2 == len(lora) == 40 * 10 * 2
    params = dict(model.named_parameters())
    assert all(tuple(params[t.param].shape) == (t.up.shape[0], t.down.shape[1]) for t in targets)


def test_a_1_3b_lora_is_refused_by_the_14b_model_in_one_line():
    model, lora = _model("wan2.1-t2v-14b", meta=True), _pusa_lora("wan2.1-t2v-1.3b", rank=512, meta=True)
    with pytest.raises(ValueError) as err:
        check_lora(model, lora)
    msg = str(err.value)
    assert "\n" not in msg and "(1536, 1536)" in msg and "(5120, 5120)" in msg and "wan2.1-t2v-1.3b" in msg


def test_a_14b_lora_is_refused_by_a_smaller_model_without_changing_it():
    model, lora = _model(), _pusa_lora("wan2.1-t2v-14b", rank=2, meta=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"^LoRA for another base: 380 targets missing from this model, e\.g\. "
                                         r"blocks\.2\.attn1\.to_q\.weight; .*wan2\.1-t2v-14b"):
        merge_lora(model, lora)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_a_shape_mismatch_late_in_the_file_leaves_the_model_unchanged():
    model, lora = _model(), _pusa_lora()
    lora["blocks.1.ffn.2.lora_A.default.weight"] = torch.zeros(4, 24)  # ffn.2's in is ffn_dim 48
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"blocks\.1\.ffn\.2: \(out, in\) = \(24, 24\) but blocks\.1\.ffn\.net\.2"):
        merge_lora(model, lora)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_the_fvdm_backbone_is_refused_with_the_fix():
    from fvdm.plugins.backbones.wan import WanBackbone

    backbone = WanBackbone(WanBackbone.Config(size="tiny"))
    with pytest.raises(ValueError, match="pass backbone.transformer"):
        merge_lora(backbone, _pusa_lora())


@pytest.mark.parametrize("extra, match", [
    ({"blocks.0.self_attn.q.diff_b": torch.zeros(24)}, r"'blocks\.0\.self_attn\.q\.diff_b'"),
    ({"blocks.0.self_attn.q.alpha": torch.tensor(4.0)}, r"'blocks\.0\.self_attn\.q\.alpha'"),
    ({"blocks.0.self_attn.norm_q.lora_A.default.weight": torch.zeros(4, 24),
      "blocks.0.self_attn.norm_q.lora_B.default.weight": torch.zeros(24, 4)}, r"'blocks\.0\.self_attn\.norm_q'"),
    ({"blocks.0.cross_attn.k_img.lora_A.default.weight": torch.zeros(4, 24)}, "has lora_A but no lora_B"),
])
def test_stray_and_unpaired_keys_are_refused_by_name(extra, match):
    with pytest.raises(ValueError, match=match):
        check_lora(_model(), {**_pusa_lora(), **extra})


def test_mixed_ranks_are_refused():
    lora = _pusa_lora(rank=4)
    lora["blocks.0.ffn.0.lora_A.default.weight"] = torch.zeros(2, 24)
    lora["blocks.0.ffn.0.lora_B.default.weight"] = torch.zeros(48, 2)
    with pytest.raises(ValueError, match=r"different ranks \[2, 4\]"):
        check_lora(_model(), lora)


def test_a_missing_file_names_the_public_copy_and_no_download(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        read_lora(tmp_path / "pusa_v1.pt")
    msg = str(err.value)
    assert "\n" not in msg and "RaphaelLiu/PusaV1" in msg and "pusa_v1.pt" in msg and "never downloads" in msg


def test_a_nested_checkpoint_is_refused(tmp_path):
    torch.save({"state_dict": _pusa_lora()}, tmp_path / "ckpt.pt")
    with pytest.raises(ValueError, match="not a flat"):
        read_lora(tmp_path / "ckpt.pt")
