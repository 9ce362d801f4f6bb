"""The settings part of helm/jargate/values.schema.json, made from the gateway's own
Settings model and values.yaml's comments: `python -m tests.helm_schema` rewrites it, and
tests/test_helm.py checks that the file holds exactly what this makes."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from proxy.settings import ENV_PREFIX, Settings

CHART = Path(__file__).resolve().parent.parent / "helm" / "jargate"
SCHEMA = CHART / "values.schema.json"
#: Every value is a string in the environment: "" leaves a setting unset.
UNSET: dict[str, Any] = {"const": ""}
#: What pydantic reads as a boolean from the environment, in the spellings the chart renders.
BOOLEAN_STRINGS: dict[str, Any] = {
    "type": "string",
    "pattern": "^(true|false|True|False|1|0|yes|no|on|off)$",
}
NUMBER_STRING: dict[str, Any] = {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]+)?$"}
INTEGER_STRING: dict[str, Any] = {"type": "string", "pattern": "^-?[0-9]+$"}
_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")


def _descriptions() -> dict[str, str]:
    text = (CHART / "values.yaml").read_text()
    return dict(re.findall(r"^\s*# (JARGATE_[A-Z0-9_]+) -- (.+)$", text, flags=re.MULTILINE))


def _accepted(field: dict[str, Any]) -> list[dict[str, Any]]:
    """The value forms a field's JSON schema allows, as Helm values (strings included)."""
    forms = field.get("anyOf", [field])
    accepted: list[dict[str, Any]] = []
    for form in forms:
        kind = form.get("type")
        bounds = {key: form[key] for key in _BOUNDS if key in form}
        if kind == "null":
            continue
        if "enum" in form:
            accepted.append({"enum": list(form["enum"])})
        elif kind == "boolean":
            accepted += [{"type": "boolean"}, BOOLEAN_STRINGS]
        elif kind == "integer":
            accepted += [{"type": "integer", **bounds}, INTEGER_STRING]
        elif kind == "number":
            accepted += [{"type": "number", **bounds}, NUMBER_STRING]
        else:  # strings, paths, URLs, secrets; lists (CIDRs) are comma-separated strings
            accepted.append({"type": "string"})
    return accepted


def settings_schema() -> dict[str, Any]:
    """The schema of the chart's `settings` map: exactly the gateway's variables."""
    descriptions = _descriptions()
    properties: dict[str, Any] = {}
    for name, field in Settings.model_json_schema()["properties"].items():
        variable = f"{ENV_PREFIX}{name.upper()}"
        entry: dict[str, Any] = {"anyOf": [UNSET, *_accepted(field)]}
        if variable in descriptions:
            entry = {"description": descriptions[variable], **entry}
        properties[variable] = entry
    return {
        "type": "object",
        "description": "every JARGATE_* setting of the gateway, by its variable name",
        "additionalProperties": False,
        "properties": dict(sorted(properties.items())),
    }


def write() -> None:
    schema = json.loads(SCHEMA.read_text())
    schema["properties"]["settings"] = settings_schema()
    SCHEMA.write_text(json.dumps(schema, indent=2) + "\n")


if __name__ == "__main__":
    write()
