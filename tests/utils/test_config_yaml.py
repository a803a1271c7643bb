"""Config YAML written from the dataclasses: the body is the schema's defaults, composed onto the
schema; the comment header is kept; a stale file is reported and rewritten."""

import pytest
import yaml
from omegaconf import OmegaConf

from verl.config.sft import SFTConfig
from verl.utils import config_yaml

HEADER = "# Generated from verl.config.sft:SFTConfig (sft_trainer_schema) by make configs.\n# Kept.\n"


def test_the_body_is_the_schemas_defaults_composed_onto_it():
    text = config_yaml.render(HEADER + "data:\n  train_files: stale.parquet\n")
    assert text.startswith(HEADER + "defaults:\n")
    raw = yaml.safe_load(text)
    assert raw.pop("defaults") == ["sft_trainer_schema", "_self_"]
    assert raw == OmegaConf.to_container(OmegaConf.structured(SFTConfig), resolve=False)


def test_a_stale_file_is_named_then_rewritten(tmp_path, capsys):
    path = tmp_path / "sft.yaml"
    path.write_text(HEADER + "data:\n  train_files: stale.parquet\n")
    assert config_yaml.stale([str(path)]) == [str(path)]
    assert config_yaml.main([str(path), "--check"]) == 1 and "stale" in capsys.readouterr().out
    assert config_yaml.main([str(path)]) == 0
    assert config_yaml.main([str(path), "--check"]) == 0


def test_a_file_without_its_schema_line_is_refused():
    with pytest.raises(ValueError, match="x.yaml: the first line must be"):
        config_yaml.render("data:\n  train_files: a.parquet\n", "x.yaml")
