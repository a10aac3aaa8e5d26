"""make_ema for LoRA runs: the frozen base is shared with the model, never copied, even during set-up.

Measured at the Wan 1.3B width (2 blocks) beside these tests: ``benchmarks/wan_lora_setup_memory.py``,
``benchmarks/results/wan_lora_setup/results.json`` (EMA set-up storages and resident set, old vs now; base
hashes of an adapter export with and without the fingerprint memo).
"""

from __future__ import annotations

import torch
from torch import nn

from fvdm.core.ema import ema_update, make_ema


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 4))
    model[0].requires_grad_(False)  # the frozen base; layer 1 trains (the adapters)
    return model


def test_set_up_copies_only_the_trainable_parameters(monkeypatch):
    copied: list[int] = []
    deepcopy = torch.nn.Parameter.__deepcopy__

    def counting(self, memo):
        copied.append(self.numel())
        return deepcopy(self, memo)

    monkeypatch.setattr(torch.nn.Parameter, "__deepcopy__", counting)
    model = _model()
    ema = make_ema(model, share_frozen=True)
    assert sorted(copied) == [4, 256]  # layer 1's bias and weight; the 64x64 base was never copied
    assert ema[0].weight is model[0].weight and ema[0].bias is model[0].bias
    # what set-up holds: one base plus the trainable state twice (model and EMA), nothing freed later
    storages = {p.untyped_storage().data_ptr() for m in (model, ema) for p in m.parameters()}
    assert len(storages) == 2 + 2 * 2
    copied.clear()
    make_ema(_model())  # without sharing every parameter is the EMA's own
    assert sorted(copied) == [4, 64, 256, 4096]


def test_shared_base_is_not_averaged_and_the_adapters_are():
    model = _model()
    ema = make_ema(model, share_frozen=True)
    base = model[0].weight.clone()
    with torch.no_grad():
        model[1].weight.add_(1.0)
    ema_update(ema, model, decay=0.5)
    assert torch.equal(model[0].weight, base) and ema[0].weight is model[0].weight
    torch.testing.assert_close(ema[1].weight, model[1].weight - 0.5)


def test_a_base_of_another_dtype_is_converted_not_shared():
    model = _model().to(torch.bfloat16)
    model[1].float()
    ema = make_ema(model, share_frozen=True)
    assert ema[0].weight.dtype == torch.float32 and ema[0].weight is not model[0].weight


def test_a_base_is_fingerprinted_once_per_process_until_it_changes(monkeypatch):
    from fvdm.core import lora

    calls = []
    real = lora.hash_tensors
    monkeypatch.setattr(lora, "hash_tensors", lambda state: calls.append(1) or real(state))
    model = _model()
    first = lora.base_fingerprint(model)
    assert lora.base_fingerprint(model) == first and len(calls) == 1  # the same tensors: read from the memo
    with torch.no_grad():
        model[0].weight.add_(1.0)  # changed in place: its version counter moves on
    assert lora.base_fingerprint(model) != first and len(calls) == 2
    other = _model()  # equal weights, other tensors: hashed again, to the same digest
    assert lora.base_fingerprint(other) == first and len(calls) == 3
