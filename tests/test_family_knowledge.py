"""Family knowledge lives in `adapters/` and `models/` only: no other module of the package imports a family's
model or config class, names a family's config key, or branches on a model type / class name.

The family facts are read independently of the code under test: family classes are every `PreTrainedModel` /
`PretrainedConfig` subclass a module imports; family config keys are the keys a family's default config has
beyond `PretrainedConfig`'s (from transformers itself).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
from pathlib import Path

import pytest
from transformers import AutoConfig, PretrainedConfig, PreTrainedModel

import upvit_hf
from upvit_hf.adapters import REGISTRY
from upvit_hf.adapters.base import Widths

PACKAGE = Path(upvit_hf.__file__).parent
FAMILY_HOMES = ("adapters", "models")
# The demo builds its own small ViT and GPT-2 (their configs, processor and type hints) on purpose.
DEMO_MODEL_FILES = {"demo/recipe.py", "demo/vision.py", "demo/language.py", "demo/data.py"}
# Settings every family may carry and transformers itself reads (generation, weight tying): not family knowledge.
SHARED_SETTINGS = {"bos_token_id", "eos_token_id", "pad_token_id", "tie_word_embeddings", "use_cache"}
# Architecture names end in a head suffix (`ViTForImageClassification`, `GPT2LMHeadModel`): a string that
# looks like one is a suffix table or a family class by name.
CLASS_NAME = re.compile(r"^(?!Auto)\w*(For[A-Z]\w+|LMHeadModel|HeadsModel)$")


def _family_keys() -> set[str]:
    base = set(PretrainedConfig().to_dict())
    keys = {key for model_type in REGISTRY for key in AutoConfig.for_model(model_type).to_dict()} - base
    return keys - SHARED_SETTINGS


FAMILY_KEYS = _family_keys()
WIDTH_NAMES = set(Widths.__dataclass_fields__)  # family-independent names (also ViT's keys): fine as strings


def _checked_files() -> list[Path]:
    files = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative.split("/")[0] in FAMILY_HOMES or relative in DEMO_MODEL_FILES:
            continue
        files.append(path)
    return files


def _is_config(node: ast.AST) -> bool:
    """`config`, `model.config`, `self.model.config`, `getattr(model, "config", ...)`."""
    if isinstance(node, ast.Name):
        return node.id == "config" or node.id.endswith("_config")
    if isinstance(node, ast.Attribute):
        return node.attr == "config"
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr":
        return len(node.args) > 1 and isinstance(node.args[1], ast.Constant) and node.args[1].value == "config"
    return False


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        first = body[0] if isinstance(body, list) and body else None
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
            ids.add(id(first.value))
    return ids


def _imported_family_classes(tree: ast.AST, package: str) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom):
            continue
        name = "." * node.level + (node.module or "")
        source = importlib.import_module(importlib.util.resolve_name(name, package) if node.level else name)
        for alias in node.names:
            obj = getattr(source, alias.name, None)
            if (isinstance(obj, type) and issubclass(obj, (PreTrainedModel, PretrainedConfig))
                    and obj not in (PreTrainedModel, PretrainedConfig)):
                found.append(alias.name)
    return found


def _violations(path: Path, package: str) -> list[str]:
    """What `path` (a module of `package`, for its relative imports) knows about families."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    problems = [f"imports family class {name}" for name in _imported_family_classes(tree, package)]
    docstrings = _docstrings(tree)
    for node in ast.walk(tree):
        line = f"line {getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Attribute) and node.attr in FAMILY_KEYS and _is_config(node.value):
            problems.append(f"{line}: reads config key {node.attr!r}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            if node.value in FAMILY_KEYS - WIDTH_NAMES:
                problems.append(f"{line}: names config key {node.value!r}")
            elif CLASS_NAME.match(node.value):
                problems.append(f"{line}: names a model class (suffix) {node.value!r}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr"):
            if len(node.args) > 1 and _is_config(node.args[0]) and isinstance(node.args[1], ast.Constant) \
                    and node.args[1].value in FAMILY_KEYS:
                problems.append(f"{line}: reads config key {node.args[1].value!r}")
        elif isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            # `x.model_type`, `model_type`, `d["model_type"]`, `type(m).__name__` (not a module's bare `__name__`)
            names = [o.attr if isinstance(o, ast.Attribute) else getattr(o, "id", None) for o in operands]
            names += [o.slice.value for o in operands
                      if isinstance(o, ast.Subscript) and isinstance(o.slice, ast.Constant)]
            class_names = [o for o in operands if isinstance(o, ast.Attribute) and o.attr == "__name__"]
            if ("model_type" in names or class_names) and any(
                    isinstance(o, ast.Constant) and isinstance(o.value, str) for o in operands):
                problems.append(f"{line}: branches on a model type or class name")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr in ("endswith", "startswith"):
            receiver = ast.unparse(node.func.value)
            if "architecture" in receiver or "__name__" in receiver or "model_type" in receiver:
                problems.append(f"{line}: branches on a class name / model type ({receiver}.{node.func.attr})")
    return problems


def test_the_rules_see_family_knowledge(tmp_path: Path):
    """The rules flag what they are meant to (written in the shapes the package used to have)."""
    assert {"n_embd", "n_positions", "image_size", "num_channels", "vocab_size", "d_model"} <= FAMILY_KEYS
    assert {"num_labels", "architectures", "model_type"}.isdisjoint(FAMILY_KEYS)
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from transformers import AutoModel, GPT2Model\n"
        "SUFFIXES = ('ForImageClassification', 'LMHeadModel')\n"
        "def f(model, arch):\n"
        "    n = model.config.n_embd + getattr(model.config, 'n_positions', 0)\n"
        "    if model.config.model_type == 'gpt2' or model.config.architectures[0].endswith('x'):\n"
        "        return model.config.num_labels\n"
        "    return model.config.image_size\n"
    )
    problems = "\n".join(_violations(sample, "upvit_hf"))
    for expected in ("GPT2Model", "'ForImageClassification'", "'LMHeadModel'", "'n_embd'", "'n_positions'",
                     "model type", "architectures[0].endswith", "'image_size'"):
        assert expected in problems, expected
    assert "AutoModel" not in problems.replace("AutoModel,", "") and "num_labels" not in problems


@pytest.mark.parametrize("path", _checked_files(), ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_no_family_knowledge_outside_adapters_and_models(path: Path):
    module = path.relative_to(PACKAGE.parent).with_suffix("").as_posix().replace("/", ".")
    package = module.removesuffix(".__init__") if path.name == "__init__.py" else module.rpartition(".")[0]
    assert _violations(path, package) == []
