"""torchrun DDP on CPU (gloo): 2 processes x b give the loss and weights of 1 process x 2b."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fvdm.core.checkpoint import load_checkpoint
from fvdm.core.config import parse_config
from fvdm.core.engine import train
from fvdm.core.plugins import load_plugins

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("parallel,backbone", [("ddp", "latte_tiny"), ("fsdp2", "latte_tiny"), ("fsdp2", "wan"),
                                               ("fsdp2", "wan_lora")])
def test_two_gloo_ranks_match_one_process(tmp_path, parallel, backbone):
    wan = backbone.startswith("wan")
    if wan:
        pytest.importorskip("diffusers")
    if backbone == "wan_lora":
        pytest.importorskip("peft")
    cfg = {
        "name": "ddp", "seed": 3, "run_root": str(tmp_path / "runs"),
        # class-conditional: label dropout is drawn by the engine, so it too is split-invariant
        "data": {"name": "moving_digits", "num_frames": 4, "resolution": 16, "num_clips": 32,
                 "class_conditional": not wan},
        "backbone": {"name": "wan", "size": "tiny"} if wan else {"name": "latte_tiny"},
        **({"noise_schedule": "rectified_flow"} if wan else {}),
        "train": {"steps": 4, "batch_size": 4, "lr": 1e-3, "grad_clip": 1.0, "log_every": 1,
                  "tensorboard": False, "parallel": parallel,
                  **({"lora": {"rank": 4}} if backbone == "wan_lora" else {})},
    }
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "fvdm", "train", str(path), "--run-dir", str(tmp_path / "two"), "--no-progress"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("fvdm train: done") == 1  # rank 0 alone logs
    assert "2 rank(s) x 2" in proc.stdout

    # one process cannot shard: the reference runs unwrapped (the same arithmetic FSDP2 distributes)
    single = {**cfg, "train": {**cfg["train"], "parallel": "ddp"}}
    one = train(parse_config(single), load_plugins(), run_dir=tmp_path / "one", progress=False)
    a, b = load_checkpoint(tmp_path / "one"), load_checkpoint(tmp_path / "two")
    assert b["world_size"] == 2 and len(b["rng"]["ranks"]) == 2
    assert a["data_position"] == b["data_position"] == 16
    torch.testing.assert_close(b["losses"], torch.tensor(one["losses"], dtype=torch.float64), rtol=0, atol=1e-5)
    # Wan without text attends to one zero text token: softmax over one key is 1 whatever the query, so the
    # cross-attention's query/key weights get gradients that are pure rounding noise (~1e-12), which Adam
    # normalizes into +-lr steps of either sign; they are not comparable between any two runs
    degenerate = ("attn2.to_q.", "attn2.to_k.", "attn2.norm_q.", "attn2.norm_k.") if wan else ()
    for key in ("model", "ema"):
        for name in a[key]:
            if any(d in name for d in degenerate):
                continue
            torch.testing.assert_close(b[key][name], a[key][name], rtol=0, atol=1e-5, msg=f"{key}.{name}")
    assert sorted(os.listdir(tmp_path / "two" / "checkpoints")) == ["last.pt", "step-00000004.pt"]


def test_fsdp2_without_torchrun_is_refused_before_training(tmp_path):
    from fvdm.core.errors import ConfigError

    cfg = parse_config({"data": {"name": "moving_digits", "num_frames": 4, "resolution": 16, "num_clips": 8},
                        "train": {"steps": 1, "batch_size": 2, "parallel": "fsdp2", "tensorboard": False}})
    with pytest.raises(ConfigError, match="fsdp2 shards over several processes: start them with `torchrun"):
        train(cfg, load_plugins(), run_dir=tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
def test_single_process_needs_no_process_group(monkeypatch):
    from fvdm.core.distributed import all_reduce_mean, init_distributed

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    info = init_distributed("cpu")
    assert (info.rank, info.world_size, info.is_main, info.distributed) == (0, 1, True, False)
    assert torch.equal(all_reduce_mean(torch.ones(2), info), torch.ones(2))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(RuntimeError, match="torchrun --nproc-per-node"):
        init_distributed("cpu")


def _dry_rank_worker(rank: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    from fvdm.core import distributed as D
    from fvdm.core.data_stream import next_batch
    from fvdm.core.errors import FvdmError

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)

    def stream():
        if rank == 1:  # this rank's shard is bad: its stream cannot form a batch
            raise FvdmError("rank 1: no batch of 4 clips")
        while True:
            yield {"video": torch.zeros(1)}

    info = D.DistInfo(rank=rank, world_size=2)
    try:
        next_batch(stream(), info, torch.device("cpu"))
        msg = "no error"
    except FvdmError as exc:
        msg = str(exc)
    with open(f"{out_dir}/rank{rank}.txt", "w") as f:
        f.write(msg)
    dist.destroy_process_group()


def test_a_rank_out_of_data_stops_every_rank(tmp_path):
    """One bad shard of two used to stall both ranks (the healthy one waited in the gradient all-reduce)."""
    import torch.multiprocessing as mp

    mp.start_processes(_dry_rank_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True,
                       start_method="spawn")
    assert (tmp_path / "rank1.txt").read_text() == "rank 1: no batch of 4 clips"
    assert "1 other rank(s) ran out of data" in (tmp_path / "rank0.txt").read_text()
