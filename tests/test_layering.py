"""The pure layers never import platform code or anything to their right in the module map."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "policies": ("discord", "aiohttp", "classifiers", "bot"),
    "classifiers": ("discord", "aiohttp", "bot"),
    "bot/engine": ("discord", "aiohttp", "bot.storage", "bot.web", "bot.cogs", "bot.client", "bot.cli", "bot.pipeline"),
    "bot/storage": ("discord", "aiohttp", "bot.web", "bot.cogs", "bot.client", "bot.cli", "bot.pipeline"),
}


def _imports(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_point_left_only(layer):
    bad = []
    for path in (REPO / layer).rglob("*.py"):
        for name in _imports(path):
            if any(name == f or name.startswith(f + ".") for f in FORBIDDEN[layer]):
                # classifiers.train/evaluate are offline tools and may use the engine to score rules.
                if layer == "classifiers" and path.stem == "evaluate" and name.startswith("bot.engine"):
                    continue
                bad.append(f"{path.relative_to(REPO)} imports {name}")
    assert not bad, bad


def test_bot_package_init_is_empty():
    assert (REPO / "bot" / "__init__.py").read_text().strip() == ""


def test_settings_module_imports_nothing_from_the_project():
    """policies/settings.py is read by every layer (policies, classifiers, bot), so it imports none of them."""
    names = list(_imports(REPO / "policies" / "settings.py"))
    bad = [n for n in names if n.split(".")[0] in ("bot", "classifiers", "policies", "discord", "aiohttp")]
    assert not bad, bad
