"""The library's layers (docs/architecture.md): a run's settings travel one way down, and what knows about processes,
devices and loaders is said in one place each. Read from the source, as an import linter would."""
import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[1] / "core"
# Below the Trainer: they never see the process group.
BELOW_THE_TRAINER = ("data", "loaders", "decoded", "feature_cache", "folding", "models", "features", "health",
                     "analysis", "device", "config", "results", "recipes", "runs", "exclusions", "predict", "explain",
                     "export", "presets", "images", "stats", "staging", "archive", "errors", "compiling")
TRAINING = ("train", "loop", "strategy", "distributed", "loaders", "feature_cache", "folding", "compiling", "recipes",
            "experiment", "jobs", "eta")


def imports(module: str) -> set[str]:
    """The core modules `module` imports, by name ("core.x" or "from core import x")."""
    found = set()
    for node in ast.walk(ast.parse((CORE / f"{module}.py").read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "core":
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("core."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {alias.name.split(".")[1] for alias in node.names if alias.name.startswith("core.")}
    return {name for name in found if (CORE / f"{name}.py").exists()}


def reachable(module: str) -> set[str]:
    seen, todo = set(), [module]
    while todo:
        for name in imports(todo.pop()) - seen:
            seen.add(name)
            todo.append(name)
    return seen


def calls(module: str, name: str) -> int:
    tree = ast.parse((CORE / f"{module}.py").read_text())
    return sum(isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == name
               for node in ast.walk(tree))


def modules() -> list[str]:
    return sorted(path.stem for path in CORE.glob("*.py") if path.stem not in ("__init__", "__main__"))


@pytest.mark.parametrize("module", BELOW_THE_TRAINER)
def test_nothing_below_the_trainer_knows_the_process_group(module):
    assert not {"distributed", "strategy", "train"} & reachable(module), module
    assert "World" not in (CORE / f"{module}.py").read_text()


def test_the_health_check_does_not_depend_on_the_training_code():
    assert not set(TRAINING) & reachable("health"), reachable("health")


def test_only_the_loaders_module_builds_data_loaders():
    assert [module for module in modules() if calls(module, "DataLoader")] == ["loaders"]


def test_a_run_picks_its_device_in_one_place():
    """The strategy decides a run's device; core.distributed only for torchrun's process group, the command line only
    for its commands that do not train (predict, data --health)."""
    assert {module for module in modules() if calls(module, "pick_device")} == {"strategy", "distributed", "cli"}
    assert [module for module in modules() if calls(module, "amp_dtype")] == ["device"]
    assert "channels_last" not in "".join((CORE / f"{module}.py").read_text() for module in modules()
                                          if module != "device")


def test_the_loop_names_no_optimiser_scheduler_or_device():
    text = (CORE / "loop.py").read_text()
    for name in ("SGD", "Adam", "StepLR", "OneCycleLR", "CrossEntropyLoss", "cuda", "pick_device"):
        assert name not in text, name
