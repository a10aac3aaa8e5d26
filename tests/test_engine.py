"""Training engine: loss falls, bit-identical resume, NaN stop, input checks, CLI (real built-ins, tiny)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from fvdm.cli import main as cli_main
from fvdm.core.checkpoint import CheckpointError, load_checkpoint
from fvdm.core.config import parse_config
from fvdm.core.build import build_components
from fvdm.core.data_stream import StreamBatchSampler
from fvdm.core.engine import NonFiniteLossError, lr_at, train
from fvdm.core.previews import save_gif
from fvdm.core.errors import ConfigError
from fvdm.core.hookspecs import hookimpl
from fvdm.core.interfaces import PluginConfig
from fvdm.core.plugins import load_plugins


def tiny(tmp_path, **train_kw):
    """latte_tiny + ddpm + ptss on 4-frame 16x16 moving digits."""
    data = {"name": "tiny", "run_root": str(tmp_path / "runs"),
            "data": {"name": "moving_digits", "num_frames": 4, "resolution": 16, "num_clips": 32},
            "train": {"steps": 10, "batch_size": 4, "lr": 1e-3, "log_every": 5, "ckpt_every": 100,
                      "tensorboard": False, **train_kw}}
    return data


@pytest.fixture(scope="module")
def plugins():
    return load_plugins()


def test_loss_falls_on_moving_digits(plugins, tmp_path):
    cfg = parse_config(tiny(tmp_path, steps=40, warmup_steps=5, log_every=20))
    res = train(cfg, plugins, progress=False)
    losses = res["losses"]
    assert len(losses) == 40 and all(math.isfinite(v) for v in losses)
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.7 * first, (first, last)
    run = res["run_dir"]
    recs = [json.loads(line) for line in open(f"{run}/metrics.jsonl")]
    assert [r["step"] for r in recs] == [20, 40]
    assert {"loss", "grad_norm", "lr", "steps_per_sec"} <= set(recs[-1])
    assert any(k.startswith("loss_t") for k in recs[-1])  # per-timestep-bucket losses


def test_resume_is_bit_identical(plugins, tmp_path):
    # class-conditional (engine-side label dropout), grad accumulation, warmup: all must resume exactly
    d = tiny(tmp_path, steps=20, grad_accum=2, warmup_steps=4, ckpt_every=7)
    d["data"]["class_conditional"] = True
    cfg = parse_config(d)
    straight = train(cfg, plugins, run_dir=tmp_path / "a", progress=False)
    first = train(cfg, plugins, run_dir=tmp_path / "b", max_steps=10, progress=False)
    assert first["step"] == 10
    second = train(cfg, plugins, run_dir=tmp_path / "b", resume=True, progress=False)
    assert first["losses"] + second["losses"] == straight["losses"]  # every bit of the loss curve
    assert second["loss_history"] == straight["losses"]
    a, b = load_checkpoint(tmp_path / "a"), load_checkpoint(tmp_path / "b")
    assert a["step"] == b["step"] == 20 and a["data_position"] == b["data_position"] == 80
    for key in ("model", "ema"):
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), (key, name)
    for i, st in a["optimizer"]["state"].items():
        for k, v in st.items():
            assert torch.equal(v, b["optimizer"]["state"][i][k])


def test_max_minutes_stops_with_a_checkpoint_and_resume_continues_exactly(plugins, tmp_path):
    cfg = parse_config(tiny(tmp_path, steps=6, ckpt_every=100))
    straight = train(cfg, plugins, run_dir=tmp_path / "a", progress=False)
    sliced, losses = [], []
    for i in range(10):  # 1e-9 minutes: every call stops after its first step, with a checkpoint there
        res = train(cfg, plugins, run_dir=tmp_path / "b", resume=i > 0, max_minutes=1e-9, progress=False)
        sliced.append(res["step"])
        losses += res["losses"]
        if not res["stopped_early"]:
            break
    assert sliced == [1, 2, 3, 4, 5, 6] and losses == straight["losses"] and not straight["stopped_early"]
    a, b = load_checkpoint(tmp_path / "a"), load_checkpoint(tmp_path / "b")
    assert all(torch.equal(a["ema"][k], b["ema"][k]) for k in a["ema"])
    with pytest.raises(ValueError, match="max_minutes must be > 0"):
        train(cfg, plugins, run_dir=tmp_path / "c", max_minutes=0, progress=False)


def scale_loss_at_call(monkeypatch, call: int, factor: float) -> None:
    """Multiply the DDPM training loss by ``factor`` at its ``call``-th evaluation (a finite blow-up)."""
    from fvdm.plugins.noise_schedules.ddpm import DDPMSchedule

    calls = {"n": 0}
    orig = DDPMSchedule.loss

    def scaled(self, *args):
        calls["n"] += 1
        out = orig(self, *args)
        return out * factor if calls["n"] == call else out

    monkeypatch.setattr(DDPMSchedule, "loss", scaled)


def test_nan_loss_stops_with_step_and_keeps_checkpoint(plugins, tmp_path, monkeypatch):
    scale_loss_at_call(monkeypatch, 7, float("nan"))
    cfg = parse_config(tiny(tmp_path, steps=10, ckpt_every=5))
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at step 7 .*last good checkpoint: .*step 5"):
        train(cfg, plugins, run_dir=tmp_path / "r", progress=False)
    ck = load_checkpoint(tmp_path / "r")
    assert ck["step"] == 5 and len(ck["losses"]) == 5
    assert all(torch.isfinite(v).all() for v in ck["model"].values())


def test_build_components_fills_backbone_from_data(plugins, tmp_path):
    d = tiny(tmp_path)
    d["data"].update(channels=3, class_conditional=True)
    parts = build_components(parse_config(d), plugins)
    model, schedule = parts.model, parts.schedule
    assert (model.in_channels, model.input_size, model.num_frames, model.num_classes) == (3, 16, 4, 10)
    assert model.out_channels == schedule.out_channels(3) == 6  # learned sigma

    bad = tiny(tmp_path)
    bad["backbone"] = {"name": "latte_tiny", "in_channels": 4}
    with pytest.raises(ConfigError, match=r"backbone.in_channels: 4, but data/autoencoder/noise schedule imply 1"):
        build_components(parse_config(bad), plugins)
    short = tiny(tmp_path)
    short["backbone"] = {"name": "latte_tiny", "num_frames": 2}
    with pytest.raises(ConfigError, match=r"backbone.num_frames: 2 frames of capacity but the data has 4"):
        build_components(parse_config(short), plugins)
    bigger = tiny(tmp_path)
    bigger["backbone"] = {"name": "latte_tiny", "num_frames": 8}  # capacity above the data's F is fine
    assert build_components(parse_config(bigger), plugins).model.num_frames == 8


class _BadDigits(torch.utils.data.Dataset):
    """Stand-in dataset yielding a configurable wrong video."""

    class Config(PluginConfig):
        kind: str = "uint8"

    def __init__(self, cfg):
        self.kind, self.num_frames, self.channels, self.resolution, self.num_classes = cfg.kind, 4, 1, 16, 0

    def __len__(self):
        return 8

    def __getitem__(self, i):
        if self.kind == "uint8":
            return {"video": torch.zeros(4, 1, 16, 16, dtype=torch.uint8), "key": str(i)}
        return {"video": torch.zeros(4, 1, 8, 8), "key": str(i)}


class _BadPlugins:
    @staticmethod
    @hookimpl
    def fvdm_register_datasets(registry):
        registry.add("bad_digits", _BadDigits)

    @staticmethod
    @hookimpl
    def fvdm_register_vtv_strategies(registry):
        registry.add("too_big", lambda batch_size, num_frames, *, generator=None, device="cpu":
                     torch.full((batch_size, num_frames), 1.5), config=None)


def test_bad_inputs_fail_loudly_and_write_nothing(tmp_path):
    P = load_plugins(extra_plugins=[("bad", _BadPlugins)])
    for name, pattern in [("uint8", r"dtype torch.uint8; expected float32 in \[-1, 1\]"),
                          ("shape", r"shape \(4, 4, 1, 8, 8\); expected \(B, F, C, H, W\) = \(4, 4, 1, 16, 16\)")]:
        d = tiny(tmp_path)
        d["data"] = {"name": "bad_digits", "kind": name}
        with pytest.raises((TypeError, ValueError), match=pattern):
            train(parse_config(d), P, run_dir=tmp_path / name, progress=False)
        assert not (tmp_path / name / "checkpoints").exists()
    d = tiny(tmp_path)
    d["vtv"] = "too_big"
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        train(parse_config(d), P, run_dir=tmp_path / "t", progress=False)


def test_refuses_to_overwrite_and_checks_config_on_resume(plugins, tmp_path):
    cfg = parse_config(tiny(tmp_path, steps=3))
    run = tmp_path / "r"
    train(cfg, plugins, run_dir=run, progress=False)
    before = (run / "checkpoints" / "last.pt").read_bytes()
    with pytest.raises(CheckpointError, match="already exists; pass --resume"):
        train(cfg, plugins, run_dir=run, progress=False)
    other = parse_config(tiny(tmp_path, steps=6, batch_size=2))  # more steps is allowed, another batch is not
    with pytest.raises(CheckpointError, match=r"train.batch_size: checkpoint has 4, config has 2"):
        train(other, plugins, run_dir=run, resume=True, progress=False)
    assert (run / "checkpoints" / "last.pt").read_bytes() == before
    with pytest.raises(CheckpointError, match="nothing to resume"):
        train(cfg, plugins, run_dir=tmp_path / "empty", resume=True, progress=False)
    longer = train(parse_config(tiny(tmp_path, steps=5)), plugins, run_dir=run, resume=True, progress=False)
    assert longer["step"] == 5 and len(longer["loss_history"]) == 5
    ck = run / "checkpoints" / "last.pt"
    assert sorted(p.name for p in ck.parent.glob("step-*.pt")) == ["step-00000003.pt", "step-00000005.pt"]
    for p in ck.parent.glob("*.pt"):
        p.write_bytes(p.read_bytes()[:1000])  # every checkpoint truncated by a crash outside fvdm
    with pytest.raises(CheckpointError, match="no checkpoint in .* loads .*truncated or corrupt"):
        train(parse_config(tiny(tmp_path, steps=6)), plugins, run_dir=run, resume=True, progress=False)
    assert len(ck.read_bytes()) == 1000  # nothing overwritten


def test_resume_falls_back_to_the_newest_valid_checkpoint(plugins, tmp_path, capsys):
    cfg = parse_config(tiny(tmp_path, steps=9, ckpt_every=3, keep_last=2))
    run = tmp_path / "r"
    straight = train(cfg, plugins, run_dir=tmp_path / "s", progress=False)
    train(cfg, plugins, run_dir=run, max_steps=6, progress=False)
    ck = run / "checkpoints"
    assert sorted(p.name for p in ck.glob("step-*.pt")) == ["step-00000003.pt", "step-00000006.pt"]  # keep_last 2
    (ck / "last.pt").write_bytes((ck / "last.pt").read_bytes()[:500])  # damages step 6 too (same file)
    res = train(cfg, plugins, run_dir=run, resume=True, progress=False)
    assert "resuming from step-00000003.pt (step 3): skipped" in capsys.readouterr().err
    assert res["step"] == 9 and res["loss_history"] == straight["losses"]  # still bit-identical from step 3


def test_batch_must_divide_over_accumulation(plugins, tmp_path):
    with pytest.raises(ConfigError, match="train.batch_size: 4 is not divisible by ranks x grad_accum = 1 x 3"):
        train(parse_config(tiny(tmp_path, grad_accum=3)), plugins, progress=False)


def test_lr_schedule_closed_form():
    tc = parse_config({"train": {"lr": 1e-3, "warmup_steps": 10, "steps": 110}}).train
    assert lr_at(0, tc) == pytest.approx(1e-4) and lr_at(9, tc) == pytest.approx(1e-3) and lr_at(50, tc) == 1e-3
    tc = parse_config({"train": {"lr": 1e-3, "warmup_steps": 10, "steps": 110, "lr_schedule": "cosine",
                                 "min_lr_ratio": 0.1}}).train
    assert lr_at(10, tc) == pytest.approx(1e-3)
    assert lr_at(60, tc) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))  # halfway: cos(pi/2) = 0
    assert lr_at(110, tc) == pytest.approx(1e-4)


def test_stream_sampler_shards_match_one_rank_and_cover_each_epoch():
    one = iter(StreamBatchSampler(10, seed=3, start=0, global_micro=4, rank=0, micro=4))
    r0 = iter(StreamBatchSampler(10, seed=3, start=0, global_micro=4, rank=0, micro=2))
    r1 = iter(StreamBatchSampler(10, seed=3, start=0, global_micro=4, rank=1, micro=2))
    seen = []
    for _ in range(5):
        full = next(one)
        assert next(r0) + next(r1) == full
        seen += full
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:20]) == list(range(10))
    resumed = iter(StreamBatchSampler(10, seed=3, start=8, global_micro=4, rank=0, micro=4))
    assert next(resumed) == seen[8:12]


def test_cli_train_writes_run_dir_and_tensorboard(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(json.dumps(tiny(tmp_path, steps=4, log_every=2, tensorboard=True)))
    run = tmp_path / "cli"
    rc = cli_main(["train", str(cfg), "--run-dir", str(run), "--no-progress", "--json",
                   "-o", "train.steps=3", "-o", "train.sample_every=3", "-o", "sample.steps=3"])
    assert rc == 0
    out = capsys.readouterr().out
    assert json.loads(out[out.index("{"):])["step"] == 3
    assert (run / "config.yaml").is_file() and (run / "checkpoints" / "last.pt").is_file()
    assert list((run / "tb").glob("events.out.tfevents.*"))
    assert (run / "samples" / "step_0000003.gif").is_file()
    # bad input reaches the user as a one-line error, exit code 2
    assert cli_main(["train", str(cfg), "--run-dir", str(run), "--no-progress"]) == 2
    assert "already exists" in capsys.readouterr().err


def test_save_gif_roundtrip(tmp_path):
    from PIL import Image

    v = torch.linspace(-1, 1, 2 * 3 * 1 * 4 * 4).reshape(2, 3, 1, 4, 4)
    p = save_gif(v, tmp_path / "x.gif")
    im = Image.open(p)
    assert im.size == (8, 4) and im.n_frames == 3


def test_missing_tensorboard_warns_once_and_continues(tmp_path, monkeypatch):
    import sys

    from fvdm.core import errors, train_log

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import now fails
    monkeypatch.setattr(errors, "_warned", set())
    with pytest.warns(RuntimeWarning, match="tensorboard is not installed"):
        assert train_log.tensorboard_writer(tmp_path, True) is None
    assert train_log.tensorboard_writer(tmp_path, True) is None  # second call: silent


def test_skipped_inputs_are_logged(plugins, tmp_path, monkeypatch, capsys):
    from fvdm.plugins.datasets.moving_digits import MovingDigits

    monkeypatch.setattr(MovingDigits, "skip_counts", lambda self: {"corrupt_video": 3}, raising=False)
    cfg = parse_config(tiny(tmp_path, steps=2, log_every=1))
    res = train(cfg, plugins, progress=False)
    recs = [json.loads(line) for line in open(f"{res['run_dir']}/metrics.jsonl")]
    assert [r["data_skipped_corrupt_video"] for r in recs] == [3, 3]
    assert "skipped corrupt_video: 3" in capsys.readouterr().out


def test_eval_during_training_logs_metric(plugins, tmp_path):
    data = tiny(tmp_path, steps=2, log_every=1, eval_every=2, eval_samples=8, tensorboard=True)
    data["data"] = {"name": "moving_digits", "num_frames": 4, "resolution": 32, "num_clips": 16}
    data["sample"] = {"steps": 2}
    res = train(parse_config(data), plugins, progress=False)
    recs = [json.loads(line) for line in open(f"{res['run_dir']}/metrics.jsonl")]
    evals = [r for r in recs if "eval_fvd_digits" in r]
    assert [(r["step"], r["eval_n"]) for r in evals] == [(2, 8)]
    assert math.isfinite(evals[0]["eval_fvd_digits"]) and evals[0]["eval_fvd_digits"] > 0


def test_strategies_with_the_same_seed_share_data_order_and_noise(plugins, tmp_path, monkeypatch):
    # Paired seeds: ptss draws coins + shared + per-frame t, synchronized only shared, independent only
    # per-frame; with one generator per stream the noise and the data order must not depend on that.
    from fvdm.plugins.noise_schedules.ddpm import DDPMSchedule

    seen: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    add_noise = DDPMSchedule.add_noise

    def spy(self, x0, noise, t):
        seen.append((x0.clone(), noise.clone(), t.clone()))
        return add_noise(self, x0, noise, t)

    monkeypatch.setattr(DDPMSchedule, "add_noise", spy)
    runs = {}
    for vtv in ({"name": "synchronized"}, {"name": "ptss", "p": 0.5}, {"name": "independent"}):
        seen.clear()
        d = tiny(tmp_path, steps=3)
        d["vtv"] = vtv
        train(parse_config(d), plugins, run_dir=tmp_path / vtv["name"], progress=False)
        runs[vtv["name"]] = list(seen)
    ref = runs["synchronized"]
    assert len(ref) == 3
    for name, got in runs.items():
        for (x0, noise, _), (x0_ref, noise_ref, _) in zip(got, ref):
            assert torch.equal(x0, x0_ref), name  # same data order
            assert torch.equal(noise, noise_ref), name  # same noise tensors
    sync_t, ind_t = ref[0][2], runs["independent"][0][2]
    assert bool((sync_t == sync_t[:, :1]).all()) and not torch.equal(sync_t, ind_t)  # the strategies do differ


def test_resume_truncates_metrics_logged_after_the_checkpoint(plugins, tmp_path):
    """A run killed after its last checkpoint logged steps the resumed run logs again: no duplicate rows."""
    cfg = parse_config(tiny(tmp_path, steps=6, log_every=1))
    run = tmp_path / "r"
    train(cfg, plugins, run_dir=run, max_steps=3, progress=False)  # checkpoint at step 3
    with open(run / "metrics.jsonl", "a") as f:  # what a process killed at step 5 (before saving) had logged
        f.write(json.dumps({"step": 4, "loss": 9.0}) + "\n" + json.dumps({"step": 5, "loss": 9.0}) + "\n")
        f.write('{"step": 6, "lo')  # torn last write
    train(cfg, plugins, run_dir=run, resume=True, progress=False)
    steps = [json.loads(line)["step"] for line in open(run / "metrics.jsonl")]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert all(json.loads(line)["loss"] != 9.0 for line in open(run / "metrics.jsonl"))


def test_run_records_where_each_plugin_came_from(plugins, tmp_path):
    from fvdm.core.config import load_config

    cfg = parse_config(tiny(tmp_path, steps=1, log_every=1))
    res = train(cfg, plugins, run_dir=tmp_path / "o", progress=False)
    ck = load_checkpoint(tmp_path / "o")
    assert ck["plugin_origins"]["vtv"] == {"kind": "vtv_strategies", "name": "ptss", "origin": "builtin",
                                           "plugin": "fvdm.vtv"}
    assert ck["plugin_origins"]["backbone"]["origin"] == "builtin"
    text = (tmp_path / "o" / "config.yaml").read_text()
    assert "# vtv: vtv_strategies 'ptss' from builtin (plugin fvdm.vtv)" in text
    assert load_config(tmp_path / "o" / "config.yaml").vtv.name == "ptss"  # the comments do not stop it loading
    assert res["step"] == 1


def test_run_config_yaml_trains_again_with_the_same_hash(plugins, tmp_path):
    """The resume hint points at run_dir/config.yaml: it must validate and map to the same run (hash)."""
    from fvdm.core.config import config_hash, load_config

    cfg = parse_config(tiny(tmp_path, steps=2, log_every=1))
    train(cfg, plugins, run_dir=tmp_path / "o", max_steps=1, progress=False)
    again = load_config(tmp_path / "o" / "config.yaml")
    assert "in_channels" not in again.backbone.params  # derived by the build, not written as if chosen
    assert config_hash(again, plugins) == config_hash(cfg, plugins)
    res = train(again, plugins, run_dir=tmp_path / "o", resume=True, progress=False)  # the engine accepts it
    assert res["step"] == 2


def test_stream_that_cannot_form_a_batch_fails_instead_of_spinning(tmp_path):
    """8 clips for a batch of 16 (or every shard bad) used to loop forever on drop_last=True."""
    from torch.utils.data import IterableDataset

    from fvdm.core.data_stream import make_loader
    from fvdm.core.errors import FvdmError

    class Few(IterableDataset):
        def __iter__(self):
            for _ in range(3):
                yield {"video": torch.zeros(4, 1, 16, 16)}

        def skip_counts(self):
            return {"decode": 5}

    cfg = parse_config(tiny(tmp_path, batch_size=4))
    it = make_loader(Few(), cfg, 0, 4, 0, 1, 4)
    with pytest.raises(FvdmError, match=r"gave no batch of 4 clips on rank 0 of 1 .*skipped \{'decode': 5\}"):
        next(it)


def test_loss_spike_stops_before_saving_and_lr_can_change_on_resume(plugins, tmp_path, monkeypatch):
    """A finite blow-up (loss 1e4 x the running median) stops like a NaN would; the advice (resume the same
    run dir with a lower lr) works."""
    scale_loss_at_call(monkeypatch, 110, 1e4)
    cfg = parse_config(tiny(tmp_path, steps=120, ckpt_every=100, log_every=50))
    run = tmp_path / "r"
    with pytest.raises(NonFiniteLossError, match=r"loss spike at step 110 .*--run-dir .*--resume -o train.lr="):
        train(cfg, plugins, run_dir=run, progress=False)
    assert load_checkpoint(run)["step"] == 100  # the checkpoint from before the spike is the one kept
    lower = parse_config(tiny(tmp_path, steps=120, ckpt_every=100, log_every=50, lr=5e-4))
    res = train(lower, plugins, run_dir=run, resume=True, progress=False)
    assert res["step"] == 120


# -- divergence before the running median arms ---------------------------------------------------------
def demo_like(tmp_path, **train_kw):
    """The demo recipe (unet_video, v + min-SNR, PTSS, warmup 50) shrunk to 4-frame 16x16 digits."""
    return {"name": "demo_like", "run_root": str(tmp_path / "runs"),
            "data": {"name": "moving_digits", "num_frames": 4, "resolution": 16, "num_clips": 32},
            "backbone": {"name": "unet_video"},
            "noise_schedule": {"name": "ddpm", "prediction": "v", "learn_sigma": False, "loss_weighting": "min_snr"},
            "vtv": {"name": "ptss", "p": 0.2}, "autoencoder": "identity",
            "train": {"steps": 4, "batch_size": 4, "lr": 1e-3, "warmup_steps": 50, "ema_decay": 0.995, "log_every": 1,
                      "ckpt_every": 1, "tensorboard": False, **train_kw}}


def advised_command(err: str) -> list[str]:
    """The `fvdm train ...` command a divergence error tells the user to run, as CLI arguments."""
    import re
    import shlex

    found = re.findall(r"`(fvdm train [^`]+)`", err)
    assert len(found) == 1, err
    return shlex.split(found[0])[1:]


def test_lr_blow_up_is_refused_at_step_2_and_the_advised_command_trains_on(tmp_path, capsys):
    """train.lr=1e6 explodes the weights in step 1: step 2's loss (about 1e11, finite) is refused before it is
    applied, the step-1 checkpoint (its weights gave that loss) is not called good, and the printed command
    (a fresh start with a lower lr) trains to the end with finite losses."""
    cfg = tmp_path / "demo_like.yaml"
    cfg.write_text(json.dumps(demo_like(tmp_path)))
    run = tmp_path / "r"
    assert cli_main(["train", str(cfg), "-o", "train.lr=1e6", "--run-dir", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "loss jump at step 2" in err and "No good checkpoint" in err and "last good" not in err
    assert len(err.strip().splitlines()) == 2  # the message, then the FVDM_DEBUG hint
    assert not (run / "checkpoints" / "last.pt").exists()  # nothing a --resume could pick up
    with pytest.raises(CheckpointError):
        load_checkpoint(run)
    argv = advised_command(err)
    assert "--resume" not in argv and "train.lr=0.0001" in argv
    assert cli_main(argv + ["--no-progress"]) == 0
    ck = load_checkpoint(run)
    assert ck["step"] == 4 and all(math.isfinite(v) for v in ck["losses"].tolist())
    assert all(torch.isfinite(v).all() for v in ck["model"].values())
    assert [json.loads(line)["step"] for line in open(run / "metrics.jsonl")] == [1, 2, 3, 4]  # the fresh run's


def test_checkpoint_of_the_weights_that_diverged_is_set_aside_and_resume_uses_the_good_one(
        plugins, tmp_path, capsys, monkeypatch):
    """A blow-up at step 5 ran on the weights saved at step 4: that checkpoint is set aside, last.pt points at
    step 2 again (step 3 ran on its weights and passed), and the advised --resume continues from there."""
    scale_loss_at_call(monkeypatch, 5, 1e8)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(json.dumps(tiny(tmp_path, steps=8, ckpt_every=2, keep_last=3)))
    run = tmp_path / "r"
    assert cli_main(["train", str(cfg), "--run-dir", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "loss jump at step 5" in err and "last good checkpoint:" in err and "(step 2)" in err
    ckdir = run / "checkpoints"
    assert (ckdir / "diverged-step-00000004.pt").is_file() and not (ckdir / "step-00000004.pt").exists()
    assert load_checkpoint(run)["step"] == 2
    argv = advised_command(err)
    assert "--resume" in argv and "train.lr=0.0001" in argv
    assert cli_main(argv + ["--no-progress"]) == 0
    assert load_checkpoint(run)["step"] == 8


def test_early_guard_refuses_blow_ups_not_noisy_first_batches():
    from fvdm.core.divergence import divergence

    # first-batch losses measured at initialisation on tiny batches: min-SNR all-low-noise (1e-4), bound term
    # at low noise (190); none is a blow-up
    assert divergence(190.0, 3.0, [0.9], 50.0, 2) is None
    assert divergence(0.5, 1.0, [1e-4], 50.0, 2) is None
    assert divergence(4e11, 1e12, [0.06], 50.0, 2).startswith("loss jump at step 2")
    assert divergence(6e3, 1.0, [0.5, 30.0], 50.0, 3) is None  # 30 x 5000 is the bar
    assert divergence(2e5, 1.0, [0.5, 30.0], 50.0, 3) is not None
    assert divergence(4e11, 1.0, [0.06], 0.0, 2) is None  # spike_factor 0 disables both checks
    assert divergence(float("nan"), 1.0, [], 0.0, 1).startswith("non-finite loss at step 1")
    assert divergence(1.0, float("inf"), [], 50.0, 1).startswith("non-finite")
    # once 100 losses are known the running median takes over
    assert divergence(60.0, 1.0, [1.0] * 100, 50.0, 101).startswith("loss spike at step 101")


def test_run_is_built_by_keyword_only():
    from fvdm.core.engine import Run

    with pytest.raises(TypeError, match="positional"):
        Run(*[None] * 23)


def test_generated_mean_leaves_clean_frames_out():
    from fvdm.core.engine import generated_mean

    per_frame = torch.tensor([[5.0, 1.0, 2.0], [7.0, 3.0, 9.0]], requires_grad=True)
    t = torch.tensor([[0.0, 0.5, 0.9], [0.0, 0.0, 0.2]])
    loss = generated_mean(per_frame, t)
    assert float(loss.detach()) == pytest.approx((1.0 + 2.0 + 9.0) / 3)
    (g,) = torch.autograd.grad(loss, per_frame)
    assert torch.equal(g, torch.tensor([[0.0, 1 / 3, 1 / 3], [0.0, 0.0, 1 / 3]]))
    all_clean = generated_mean(per_frame, torch.zeros(2, 3))
    assert float(all_clean) == 0.0 and all_clean.requires_grad


@pytest.mark.parametrize("clean_frame_loss", [True, False])
def test_clean_frame_loss_switch_is_the_mean_over_the_frames_the_engine_drew_above_level_0(
        plugins, tmp_path, monkeypatch, clean_frame_loss):
    """Oracle: the per-frame losses and levels the schedule saw, averaged by hand (all frames, or those above 0)."""
    from fvdm.plugins.noise_schedules.ddpm import DDPMSchedule

    seen = []
    real = DDPMSchedule.loss

    def spy(self, *args):
        per_frame = real(self, *args)
        seen.append((per_frame.detach().clone(), args[-1].clone()))
        return per_frame

    monkeypatch.setattr(DDPMSchedule, "loss", spy)
    cfg = parse_config({**tiny(tmp_path, steps=2, clean_frame_loss=clean_frame_loss), "vtv": {"name": "clean_first"}})
    res = train(cfg, plugins, progress=False)
    for step_loss, (per_frame, t) in zip(res["losses"], seen):
        assert (t[:, 0] == 0).all() and (t[:, 1:] > 0).all()
        want = per_frame.mean() if clean_frame_loss else per_frame[:, 1:].mean()
        assert step_loss == pytest.approx(float(want), rel=1e-6)


def test_clean_frame_loss_at_its_default_leaves_the_config_hash_as_before_it_existed(plugins, tmp_path):
    from fvdm.core.config import canonical_dict

    plain = canonical_dict(parse_config(tiny(tmp_path)), plugins)
    assert "clean_frame_loss" not in plain["train"]
    assert canonical_dict(parse_config(tiny(tmp_path, clean_frame_loss=True)), plugins) == plain
    assert canonical_dict(parse_config(tiny(tmp_path, clean_frame_loss=False)), plugins)["train"]["clean_frame_loss"] is False
