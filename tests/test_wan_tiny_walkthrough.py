"""examples/wan_tiny_walkthrough.sh, the Wan path a new user follows from the docs, runs end to end.

About 70 s on one thread of the 2-core build machine (every step is a fresh `fvdm` process that imports
diffusers), hence `slow`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("diffusers")
pytest.importorskip("transformers")
pytest.importorskip("webdataset")
pytest.importorskip("av")

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "wan_tiny_walkthrough.sh"


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_walkthrough_runs_and_reapplies_the_adapter_in_both_layouts(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fvdm = bin_dir / "fvdm"  # this interpreter's fvdm, whichever checkout the tests run from
    fvdm.write_text(f"#!/bin/sh\nexec {sys.executable} -m fvdm \"$@\"\n")
    fvdm.chmod(0o755)
    env = {**os.environ, "FVDM": str(fvdm), "PYTHON": sys.executable, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    out = tmp_path / "walk"
    run = subprocess.run(["bash", str(SCRIPT), str(out)], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (out / "run" / "validation" / "step_0000020.png").is_file()  # validation ran on the held-out shard
    metrics = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any("eval_val_unconditional_l1_to_real" in m for m in metrics)
    recorded = json.loads((out / "adapter" / "adapter_config.json").read_text())["base_fingerprint"]
    for name, dtype in (("adapter", "fp32"), ("adapter_comfyui", "fp32"), ("bf16", "bf16")):
        sample = json.loads((out / "samples" / name / "unconditional.json").read_text())
        assert sample["dtype"] == dtype
        assert sample["provenance"]["training"]["pretrained"]["lora"]["base_fingerprint"] == recorded
    # a non-empty output directory is refused before anything runs
    again = subprocess.run(["bash", str(SCRIPT), str(out)], env=env, capture_output=True, text=True)
    assert again.returncode == 2 and "not empty" in again.stderr
