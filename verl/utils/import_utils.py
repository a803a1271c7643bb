import importlib
import importlib.util
import os
from typing import Any


def load_object(spec: str, what: str) -> Any:
    """Imports ``module:attr`` (or ``module.attr``); ``what`` names the config key in errors."""
    module_name, _, attr = spec.partition(":") if ":" in spec else spec.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ImportError(f"{what}: cannot import module {module_name!r} from {spec!r}: {e}") from e
    if not hasattr(module, attr):
        raise AttributeError(f"{what}: module {module_name!r} has no attribute {attr!r}")
    return getattr(module, attr)


def load_function_from(path: str, name: str, what: str) -> Any:
    """Loads ``name`` from a Python file path or an importable module name."""
    if path.endswith(".py"):
        file = os.path.expanduser(path)
        if not os.path.exists(file):
            raise FileNotFoundError(f"{what}.path: file {file} does not exist")
        spec = importlib.util.spec_from_file_location("custom_module", file)
        if spec is None or spec.loader is None:
            raise ImportError(f"{what}.path: cannot load {file} as a Python module")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(path)
    if not hasattr(module, name):
        raise AttributeError(f"{what}.name: {path} defines no function {name!r}")
    return getattr(module, name)
