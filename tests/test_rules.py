"""The rule ids refusals carry (``reason``) are a fixed, documented list: every rule the
code raises is in proxy/rules.py, every entry there is documented in docs/reference.md."""

from __future__ import annotations

import ast
from pathlib import Path

from proxy.rules import KINDS, RULES
from tests.support import REPO


def _literal_rules(tree: ast.AST) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        named = (isinstance(node, ast.keyword) and node.arg == "rule") or (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "rule" for t in node.targets)
        )
        value = getattr(node, "value", None)
        if named and isinstance(value, ast.Constant) and isinstance(value.value, str):
            found.add(value.value)
    return found


def _trees() -> dict[Path, ast.Module]:
    return {path: ast.parse(path.read_text()) for path in (REPO / "proxy").rglob("*.py")}


def test_every_rule_raised_is_in_the_list() -> None:
    """Each rule id written in the code, and each a JWT rule is raised as for both kinds
    (the claim checks and the reading of a compact JWS), is a listed rule."""
    trees = _trees()
    raised = set().union(*(_literal_rules(tree) for tree in trees.values()))
    shared = _literal_rules(trees[REPO / "proxy" / "compact.py"]) | {
        f"request_object.{name}" for name in ("exp", "nbf", "iat", "aud")
    }
    for rule in shared:
        raised |= {f"{kind}.{rule.split('.', 1)[1]}" for kind in KINDS}
    assert set() == raised - set(RULES)


def test_every_listed_rule_is_documented() -> None:
    """docs/reference.md names every rule id."""
    reference = (REPO / "docs" / "reference.md").read_text()
    assert [] == [rule for rule in RULES if f"`{rule}`" not in reference]
