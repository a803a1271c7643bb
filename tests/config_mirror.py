"""The one check that a config YAML states every default of its typed schema."""

import yaml
from omegaconf import OmegaConf


def assert_yaml_mirrors_dataclass(yaml_path: str, schema, schema_name: str) -> None:
    """``yaml_path`` composes onto ``schema_name`` and repeats the dataclass ``schema``'s defaults key
    for key, so neither can change without the other."""
    with open(yaml_path) as f:
        raw = yaml.safe_load(f)
    assert raw.pop("defaults") == [schema_name, "_self_"]
    assert raw == OmegaConf.to_container(OmegaConf.structured(schema), resolve=False)
