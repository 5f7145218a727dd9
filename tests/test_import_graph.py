"""The house's one-way imports, read from the source (ast; lazy imports inside functions count too):

    client <- training <- export <- serving

The client imports nothing of ours; training never imports export or serving; export never imports serving.
Inside a package each layer imports only the layers below it (or its own), e.g. training's networks never
import its distillation or evaluation.  And every package folder is listed in pyproject.toml.
"""

from __future__ import annotations

import ast
from pathlib import Path

import tomllib
from conftest import REPO

ROOTS = {"dnsvr.client": REPO / "client" / "dnsvr" / "client", "dnsvr.training": REPO / "training",
         "dnsvr.export": REPO / "export", "dnsvr.serving": REPO / "serving"}
ORDER = ["dnsvr.client", "dnsvr.training", "dnsvr.export", "dnsvr.serving"]
LAYERS = {  # package -> {first name below it: layer}; a module may import its own layer and the ones below
    "dnsvr.training": {"paths": 0, "files": 0, "ranking": 0, "localisation": 0, "networks": 1, "packs": 2,
                       "data": 2, "distill": 3, "evaluation": 4, "cli": 5},
    "dnsvr.export": {"onnx_runner": 0, "onnx_folding": 0, "hamming": 0, "triton_config": 0, "manifest": 0,
                     "graphs": 1, "text_graphs": 1, "offline_text_graphs": 1, "text_kinds": 1, "onnx_export": 1,
                     "tensorrt": 1, "weights": 1, "parity": 2, "repository": 3, "cli": 4},
    "dnsvr.serving": {"store": 0, "pipelines": 1, "local": 1, "web": 1, "triton": 2, "cli": 3},
}


def modules() -> dict[str, Path]:
    """Every module of ours by dotted name (packages by their __init__)."""
    found = {}
    for package, root in ROOTS.items():
        for path in root.rglob("*.py"):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join([package, *parts]).removesuffix(".__init__")
            found[name] = path
    return found


def imports(path: Path, known: set[str]) -> set[str]:
    """The modules of ours that `path` imports (`from pkg import submodule` resolves to the submodule)."""
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names if alias.name.startswith("dnsvr.")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dnsvr."):
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                targets.add(submodule if submodule in known else node.module)
    return targets


def package_of(module: str) -> str:
    return ".".join(module.split(".")[:2])


def layer_of(module: str) -> int | None:
    """The layer of a module inside its package (None: the package's own __init__, a facade)."""
    parts = module.split(".")
    if len(parts) < 3:
        return None
    return LAYERS[package_of(module)][parts[2]]


def edges() -> list[tuple[str, str]]:
    known = modules()
    return [(source, target) for source, path in known.items() for target in imports(path, set(known))]


def test_packages_import_one_way():
    back = [f"{s} -> {t}" for s, t in edges() if ORDER.index(package_of(t)) > ORDER.index(package_of(s))]
    assert back == [], "back edges (client <- training <- export <- serving): " + ", ".join(back)


def test_layers_inside_packages_import_downwards():
    upward = []
    for source, target in edges():
        if package_of(source) != package_of(target) or package_of(source) == "dnsvr.client":
            continue
        source_layer, target_layer = layer_of(source), layer_of(target)
        if source_layer is not None and target_layer is not None and target_layer > source_layer:
            upward.append(f"{source} -> {target}")
    assert upward == [], "imports of a higher layer: " + ", ".join(upward)


def test_every_module_has_a_layer():
    for module in modules():
        if package_of(module) in LAYERS:
            layer_of(module)  # KeyError names a folder or module missing from LAYERS


def test_pyproject_lists_every_package():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {name for name, path in modules().items() if path.name == "__init__.py"} - {"dnsvr.client"}
    assert set(config["packages"]) == folders
