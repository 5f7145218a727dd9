"""The 1000 ImageNet-1k class names, in class-index order (the order of EfficientNet-Lite0's logits).

They are data inside the installed `open_clip_torch` distribution: `open_clip/zero_shot_metadata.py` holds them as
the tuple `IMAGENET_CLASSNAMES` (CLIP's cleaned-up names: "tench", "great white shark", "kite (bird of prey)").
The file is found through the distribution's file list and parsed with `ast` (a literal, never executed);
`open_clip` itself is never imported (it imports torchvision).
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

from dnsvr.training import paths

CLASS_NAMES_DISTRIBUTION = "open_clip_torch"
CLASS_NAMES_FILE = "open_clip/zero_shot_metadata.py"
CLASS_NAMES_VARIABLE = "IMAGENET_CLASSNAMES"
NUM_CLASSES = 1000


class ClassNamesError(RuntimeError):
    """The class-name file is missing or does not hold 1000 names."""


def class_names_file() -> Path:
    """Path of `open_clip/zero_shot_metadata.py` inside the installed `open_clip_torch` distribution."""
    return paths.distribution_file(CLASS_NAMES_DISTRIBUTION, CLASS_NAMES_FILE, "the ImageNet class names",
                                   ClassNamesError)


def parse_class_names(source: str) -> tuple[str, ...]:
    """The literal tuple assigned to `IMAGENET_CLASSNAMES` in a module's source text, checked to hold 1000
    non-empty strings."""
    for node in ast.parse(source).body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id == CLASS_NAMES_VARIABLE):
            try:
                names = ast.literal_eval(node.value)
            except ValueError as exc:
                raise ClassNamesError(f"{CLASS_NAMES_VARIABLE} is not a literal ({exc})") from exc
            names = tuple(names) if isinstance(names, (tuple, list)) else ()
            if len(names) != NUM_CLASSES or not all(isinstance(n, str) and n.strip() for n in names):
                raise ClassNamesError(f"{CLASS_NAMES_VARIABLE} must hold {NUM_CLASSES} non-empty names, got "
                                      f"{len(names)}")
            return names
    raise ClassNamesError(f"no {CLASS_NAMES_VARIABLE} assignment in the source")


@cache
def imagenet_class_names() -> tuple[str, ...]:
    """The 1000 class names, index i = class i of the ImageNet-1k classifier."""
    path = class_names_file()
    return parse_class_names(path.read_text(encoding="utf-8"))
