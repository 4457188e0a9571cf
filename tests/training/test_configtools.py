from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from training.configtools import ConfigError, config_to_dict, from_dict, load_config


@dataclass
class Optim:
    name: Literal["sgd", "adam"] = "sgd"
    lr: float = 0.1
    milestones: tuple[int, ...] = (10,)


@dataclass
class Top:
    epochs: int = 5
    optim: Optim = field(default_factory=Optim)
    resume: str | None = None
    amp: bool = False


def test_yaml_and_overrides(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("epochs: 3\noptim:\n  name: adam\n")
    cfg = load_config(Top, f, ["optim.lr=1e-3", "optim.milestones=[80, 160]", "amp=true"])
    assert cfg.epochs == 3 and cfg.optim.name == "adam"
    assert cfg.optim.lr == pytest.approx(1e-3) and cfg.optim.milestones == (80, 160)
    assert cfg.amp is True and cfg.resume is None
    again = from_dict(Top, config_to_dict(cfg))
    assert again == cfg


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["optim.lrr=1"],
            r"unknown key\(s\) \['lrr'\]; valid keys: \['lr', 'milestones', 'name'\]",
        ),
        (["optim.name=rmsprop"], "not one of"),
        (["epochs=three"], "expected an integer"),
        (["amp=1"], "expected true or false"),
        (["epochs=3", "epochs.x=1"], "is a value, not a section"),
        (["noequals"], "key.sub=value"),
    ],
)
def test_bad_overrides(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(Top, None, overrides)


def test_missing_and_invalid_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Top, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_config(Top, bad)
