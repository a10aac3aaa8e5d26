"""benchmarks/speed_public_fvdm.py: refuses bad checkouts in one line; its pipeline on a stand-in.

The public FVDM code is not needed here: the pipeline test puts a tiny stand-in ``models/latte_video.py``
(fvdm's own latte_tiny, so the two models must agree exactly) in a temporary checkout.
"""

from __future__ import annotations

import hashlib
import sys
import textwrap

import pytest

from benchmarks import speed_public_fvdm as sp

TINY = dict(model="latte_tiny", public_class="LatteVIDEO_T_2", batch=1, frames=4, channels=4, size=8, warmup=1)


def _checkout(tmp_path, source: str):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "latte_video.py").write_text(textwrap.dedent(source))
    return tmp_path


def test_refuses_dir_without_public_file_in_one_line(tmp_path, capsys):
    assert sp.main(["--public-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "models/latte_video.py not found" in err and sp.PUBLIC_REPO in err
    with pytest.raises(sp.PublicCodeError, match="is not a directory"):
        sp.check_public_dir(tmp_path / "missing")


def test_missing_dependency_is_named_and_not_stubbed(tmp_path):
    root = _checkout(tmp_path, "import fvdm_no_such_dependency_xyz\nLatteVIDEO_S_2 = None\n")
    path_before = list(sys.path)
    with pytest.raises(sp.PublicCodeError) as exc:
        sp.import_public(root)
    msg = str(exc.value)
    assert "\n" not in msg and "'fvdm_no_such_dependency_xyz'" in msg and "nothing is stubbed" in msg
    assert sys.path == path_before  # the checkout was on sys.path only for the import
    assert "fvdm_no_such_dependency_xyz" not in sys.modules


def test_file_without_the_class_is_refused(tmp_path):
    root = _checkout(tmp_path, "X = 1\n")
    with pytest.raises(sp.PublicCodeError, match="defines no LatteVIDEO_S_2"):
        sp.import_public(root)


def test_paired_ratios_differ_from_ratio_of_medians():
    r = sp.paired({"a": [2.0, 3.0, 10.0], "b": [1.0, 3.0, 4.0]}, "a", "b")
    assert r["ratio_of_medians"] == pytest.approx(1.0)  # 3 / 3
    assert r["median_paired"] == pytest.approx(2.0)  # per round 2, 1, 2.5
    assert (r["paired_min"], r["paired_max"]) == (1.0, 2.5)


STAND_IN = """
from fvdm.plugins.backbones.latte import build_latte

def LatteVIDEO_T_2(input_size, in_channels, num_frames, learn_sigma):
    return build_latte("latte_tiny", input_size=input_size, in_channels=in_channels,
                       num_frames=num_frames, learn_sigma=learn_sigma{extra})
"""


def test_pipeline_on_a_stand_in_checkout(tmp_path):
    root = _checkout(tmp_path, STAND_IN.format(extra=""))
    res = sp.run(root, threads=1, rounds=2, spec=TINY)
    c = res["check"]
    assert c["same_trainable_params"] and c["tensors_loaded"] > 0
    assert c["max_abs_diff_fp32"] < 1e-5 < c["output_abs_max"]  # same weights -> same function, not all zero
    assert set(res["median_s"]) == set(sp.VARIANTS) and res["errors"] == {}
    assert all(len(ts) == 2 for ts in res["cpu_s"].values())
    head = res["ratios"]["fvdm_bf16/public_fp32"]
    assert head["ratio_of_medians"] == pytest.approx(res["median_s"]["fvdm_bf16"] / res["median_s"]["public_fp32"])
    assert head["paired_min"] <= head["median_paired"] <= head["paired_max"]
    assert isinstance(res[f"pass_bf16_le_{sp.TARGET_VS_PUBLIC}_public_fp32"], bool)
    sha = hashlib.sha256((root / "models" / "latte_video.py").read_bytes()).hexdigest()
    assert res["public"]["file_sha256"] == sha and res["machine"]["torch"]


def test_public_model_that_does_not_map_is_refused(tmp_path):
    root = _checkout(tmp_path, STAND_IN.format(extra=", hidden_size=32, num_heads=2"))
    with pytest.raises(sp.PublicCodeError, match="does not map onto fvdm's latte_tiny") as exc:
        sp.run(root, rounds=1, spec=TINY)
    assert "\n" not in str(exc.value)
