"""`fvdm config show` prints a config that trains: through `config validate` and `fvdm train` (the same path
as any config file), with the same hash, for the built-in defaults and every shipped config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from fvdm.cli import main
from fvdm.core.config import DERIVED_BACKBONE_KEYS

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted(str(p.relative_to(REPO)) for p in (REPO / "configs").glob("*.yaml"))


def show(capsys, *args):
    assert main(["config", "show", *args]) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("config", [None] + SHIPPED)
def test_shown_config_validates_and_trains_like_the_file(config, tmp_path, capsys):
    out = show(capsys, *([str(REPO / config)] if config else []))
    shown = tmp_path / "shown.yaml"
    shown.write_text(out)
    data = yaml.safe_load(out)
    given = (yaml.safe_load((REPO / config).read_text()) if config else {}).get("backbone") or {}
    given = given if isinstance(given, dict) else {}
    # placeholders of the backbone's Config (latte: in_channels 4) are not printed as if chosen
    assert not (set(DERIVED_BACKBONE_KEYS) - set(given)) & set(data["backbone"])

    assert main(["config", "validate", str(shown)]) == 0
    hash_line = out.splitlines()[0]
    assert hash_line.startswith("# hash: ") and hash_line[len("# hash: "):] in capsys.readouterr().out
    if data["data"]["name"] != "moving_digits":  # needs a prepared dataset (and the VAE weights): validate only
        return
    assert main(["train", str(shown), "--run-dir", str(tmp_path / "run"), "--max-steps", "1",
                 "--no-progress"]) == 0
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()


def test_backbone_fields_a_config_sets_are_shown_and_json_is_plain_json(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"backbone": {"name": "latte_tiny", "num_frames": 32}}))
    data = json.loads(show(capsys, str(cfg), "--format", "json"))
    assert data["backbone"]["num_frames"] == 32 and "in_channels" not in data["backbone"]
