"""CLI errors are one line naming the problem: out-of-range flags, unusable devices, pydantic dumps, unexpected exceptions."""

from __future__ import annotations

import pytest

from fvdm.cli import main


@pytest.mark.parametrize("argv, flag", [
    (["sample", "--checkpoint", "x.pt", "--steps", "0"], "--steps"),
    (["sample", "--checkpoint", "x.pt", "--batch-size", "0"], "--batch-size"),
    (["sample", "--checkpoint", "x.pt", "--frames", "-5"], "--frames"),
    (["sample", "--checkpoint", "x.pt", "--overlap", "-1"], "--overlap"),
    (["train", "--max-steps", "-3"], "--max-steps"),
    (["demo", "--minutes", "0"], "--minutes"),
    (["demo", "--eval-clips", "0"], "--eval-clips"),
    (["bench", "run", "speed", "--threads", "0"], "--threads"),
])
def test_out_of_range_flag_is_one_line(argv, flag, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert f"argument {flag}: must be" in err[-1] and "Traceback" not in "\n".join(err)
    assert not list(tmp_path.iterdir())  # nothing ran, nothing written


def test_in_range_values_parse():
    from fvdm.commands.argtypes import int_at_least, positive_float

    assert int_at_least(0)("0") == 0 and int_at_least(1)("7") == 7 and positive_float("0.5") == 0.5
    for bad in ("nan", "-1", "x"):
        with pytest.raises(Exception, match="must be a number > 0"):
            positive_float(bad)


@pytest.mark.parametrize("argv", [["train", "--device", "cuda"], ["sample", "--checkpoint", "x.pt", "--device", "cuda:0"],
                                  ["eval", "--device", "cuda"], ["bench", "run", "speed", "--device", "gpu"]])
def test_unusable_device_is_one_line_at_parse_time(argv, capsys):
    import torch

    if "cuda" in argv[-1] and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "argument --device:" in err and ("sees no CUDA device" in err or "is not a torch device" in err)


def test_pydantic_errors_are_one_line(capsys, tmp_path):
    assert main(["bench", "run", "digits_zero_shot", "--quick", "--set", "badkey=1", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("fvdm bench: error: suite 'digits_zero_shot' (builtin): badkey: unknown parameter. "
                             "Parameters: standard, quick, ")
    assert err[0].endswith("see `fvdm bench show digits_zero_shot`")
    assert "pydantic" not in "\n".join(err) and len(err) == 2


def test_unexpected_exceptions_are_one_line_with_debug_hint(capsys, monkeypatch):
    import fvdm.commands.plugins as cmd

    def boom(args):
        raise RuntimeError("something deep broke")

    monkeypatch.setattr(cmd, "run", boom)  # the parser is built per call, so it picks this up
    assert main(["plugins"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == "fvdm plugins: error: RuntimeError: something deep broke" and "FVDM_DEBUG=1" in err[1]
    monkeypatch.setenv("FVDM_DEBUG", "1")
    with pytest.raises(RuntimeError, match="something deep broke"):
        main(["plugins"])


def test_data_errors_are_fvdm_errors_and_one_line(capsys, monkeypatch):
    """BadSampleError (on_error: raise) and 'nothing usable' used to escape the CLI as raw tracebacks."""
    import fvdm.commands.data as cmd
    from fvdm.core.errors import DataError, FvdmError
    from fvdm.plugins.datasets.video_io import BadSampleError

    assert issubclass(BadSampleError, DataError) and issubclass(DataError, FvdmError)
    assert issubclass(BadSampleError, RuntimeError)  # callers catching RuntimeError keep working

    def refuse(args):
        raise BadSampleError("clips/broken.mp4", "corrupt video (InvalidDataError: moov atom not found)")

    monkeypatch.setattr(cmd, "_pack", refuse)
    assert main(["data", "pack", "src", "dst", "--frames", "4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == "fvdm data: error: clips/broken.mp4: corrupt video (InvalidDataError: moov atom not found)"


@pytest.mark.parametrize("argv, expect", [
    (["data", "pack", "{src}", "{dst}", "--frames", "0"],
     "fvdm data: error: invalid value: num_frames: Input should be greater than or equal to 1 (got 0)"),
    (["eval", "--real", "moving_digits", "--fake", "{src}", "--metric", "fvd_digits", "--set", "num_real=abc"],
     "fvdm eval: error: invalid value: num_real: Input should be a valid integer, unable to parse string as an "
     "integer (got 'abc')"),
])
def test_bad_values_deep_in_commands_are_one_line(argv, expect, tmp_path, capsys):
    (tmp_path / "src").mkdir()
    argv = [a.format(src=tmp_path / "src", dst=tmp_path / "dst") for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == expect and len(err) == 2


def test_eval_set_key_no_metric_has_is_refused_with_a_close_match(tmp_path, capsys):
    """Dropping it silently would evaluate with the default the user meant to change."""
    (tmp_path / "src").mkdir()
    argv = ["eval", "--real", "moving_digits", "--fake", str(tmp_path / "src"), "--metric", "fvd_digits",
            "--set", "num_reel=5"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("fvdm eval: error: --set num_reel: no chosen metric (fvd_digits) has this field. "
                             "Did you mean 'num_real'?") and len(err) == 2


def test_a_validators_own_message_comes_out_once_without_pydantic_machinery(capsys, monkeypatch):
    """It used to read `Value error, ... got 'a,b' (got 'a,b')`."""
    from pydantic import BaseModel, field_validator

    import fvdm.commands.plugins as cmd

    class Indices(BaseModel):
        given: list[int]
        count: int = 1

        @field_validator("given", mode="before")
        @classmethod
        def _split(cls, v):
            raise ValueError(f"expected comma-separated frame indices, got {v!r}")

    def bad(args):
        Indices.model_validate({"given": "a,b", "count": "x"})

    monkeypatch.setattr(cmd, "run", bad)
    assert main(["plugins"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == ("fvdm plugins: error: invalid values: given: expected comma-separated frame indices, got 'a,b'; "
                      "count: Input should be a valid integer, unable to parse string as an integer (got 'x')")
