"""Every config key documents itself, and README's key tables are rendered from that help."""

import os
from dataclasses import dataclass

import pytest

from tests.conftest import REPO_ROOT
from verl.config import PPOConfig
from verl.config.sft import SFTConfig
from verl.utils.config import check_config_tree, leaf_fields, option
from verl.utils.config_docs import main as config_docs
from verl.utils.config_docs import render_table
from zerosearch.config import ZeroSearchConfig
from zerosearch.demo_config import DemoConfig


@pytest.mark.parametrize("schema", [PPOConfig, SFTConfig, ZeroSearchConfig, DemoConfig])
def test_every_leaf_key_has_its_help(schema):
    leaves = list(leaf_fields(schema()))
    assert len(leaves) > 20
    undocumented = [key for key, f, _ in leaves if len(f.metadata.get("help", "")) < 10]
    assert undocumented == []


def test_readme_key_tables_are_current():
    assert config_docs([os.path.join(REPO_ROOT, "README.md"), "--check"]) == 0


@dataclass
class _Toy:
    mode: str = option("a", "A | B mode.", choices=("a", "b"))
    names: list[str] = option(["x"], "Names.", choices=("x", "y"))
    count: int | None = option(None, "How many; null: all.", min=1, nullable=True)

    def check(self, key: str) -> None:
        if self.mode == "b" and self.count is None:
            raise ValueError(f"{key}.count must be set when mode=b")


def test_choices_min_and_own_checks_name_the_full_key():
    @dataclass
    class Outer:
        toy: _Toy

    check_config_tree(Outer(_Toy()))
    for toy, message in [
        (_Toy(mode="c"), r"toy.mode='c': use one of \['a', 'b'\]"),
        (_Toy(names=["x", "z"]), r"toy.names=\['x', 'z'\]: use any of"),
        (_Toy(count=0), "toy.count=0 must be at least 1"),
        (_Toy(mode="b"), "toy.count must be set when mode=b"),
    ]:
        with pytest.raises(ValueError, match=message):
            check_config_tree(Outer(toy))


def test_table_rows_escape_pipes_and_name_choices():
    table = render_table(_Toy, "all")
    assert "| `mode` | `a` | A \\| B mode. One of: a, b. |" in table
    assert "| `count` | `null` | How many; null: all. |" in table
