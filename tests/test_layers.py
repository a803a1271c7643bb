"""The engine's layers import one way: entry points -> trainer | workers -> single_controller,
config -> algos -> utils -> protocol; and the engine never imports the search agent. README's
layout table states the same rules."""

import ast
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[1]
ENTRY_POINTS = ("verl.trainer.run", "verl.trainer.main_ppo", "verl.trainer.main_sft")
BELOW_TRAINER = {"verl.protocol", "verl.utils", "verl.algos", "verl.config", "verl.single_controller"}
# layer -> the layers its modules may import (besides their own)
MAY_IMPORT = {
    "verl": set(),  # the package's own __init__
    "verl.protocol": set(),
    "verl.utils": {"verl.protocol"},
    "verl.algos": {"verl.utils"},
    "verl.config": {"verl.algos", "verl.utils"},
    "verl.single_controller": {"verl.protocol", "verl.utils"},
    "verl.workers": BELOW_TRAINER,
    "verl.trainer": BELOW_TRAINER,  # the entry points hand it the worker classes
    "entry points": BELOW_TRAINER | {"verl.trainer", "verl.workers"},
}


def layer(module: str) -> str:
    if any(module == entry or module.startswith(entry + ".") for entry in ENTRY_POINTS):
        return "entry points"
    return ".".join(module.split(".")[:2])


def imports(path: pathlib.Path) -> set[str]:
    """Every project module a file names in an import statement, at any depth of it."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: a relative import; the layers are checked on absolute ones"
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in names if name.split(".")[0] in ("verl", "zerosearch")}


def arrows_up(edges: dict[str, set[str]]) -> list[str]:
    """The imports that break the layering, as ``module -> imported``."""
    wrong = []
    for module, imported in sorted(edges.items()):
        allowed = MAY_IMPORT[layer(module)] | {layer(module)}
        wrong += [f"{module} -> {name}" for name in sorted(imported) if layer(name) not in allowed]
    return wrong


def engine_imports() -> dict[str, set[str]]:
    edges = {}
    for path in (REPO / "verl").rglob("*.py"):
        module = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        edges[module] = imports(path)
    return edges


def test_every_engine_module_has_a_layer():
    assert {layer(m) for m in engine_imports()} <= set(MAY_IMPORT)


def test_the_engine_imports_point_one_way():
    assert arrows_up(engine_imports()) == []


def test_an_arrow_back_up_is_named():
    assert layer("verl.trainer.run") == layer("verl.trainer.main_ppo") == "entry points"
    assert layer("verl.trainer.runner") == "verl.trainer"  # a name that only starts like one
    edges = {
        "verl.algos.core_algos": {"verl.config", "verl.utils.torch_functional"},
        "verl.trainer.ray_trainer": {"verl.workers.actor", "verl.trainer.run"},
        "verl.utils.dataset": {"zerosearch.prompts"},
    }
    assert arrows_up(edges) == [
        "verl.algos.core_algos -> verl.config",
        "verl.trainer.ray_trainer -> verl.trainer.run",
        "verl.trainer.ray_trainer -> verl.workers.actor",
        "verl.utils.dataset -> zerosearch.prompts",
    ]
