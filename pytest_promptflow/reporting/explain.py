"""What the page and the terminal say to explain a flow's results: what each variant is (its template,
its parameters, and how it differs from the default variant), read from the report document alone."""

from __future__ import annotations

import json
from typing import Any, Mapping

from ..variant_specs import parameter_changes, template_diff

MAX_TERMINAL_LINE = 160


def variants_view(described: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per node with variants: each variant (source, parameters, template) and, for every variant but the
    default, what differs from the default: the parameters and the template's line diff."""
    nodes = []
    for node, variants in described.items():
        default = next((name for name, v in variants.items() if v.get("default")), next(iter(variants), ""))
        base = variants.get(default) or {}
        nodes.append({
            "name": node,
            "variants": [{"name": name, "default": name == default, "source": v["source"],
                          "parameters": _parameters(v["parameters"]), "template": v["template"]}
                         for name, v in variants.items()],
            "differences": [_difference(name, v, default, base) for name, v in variants.items() if name != default],
        })
    return nodes


def _difference(name: str, variant: Mapping[str, Any], default: str, base: Mapping[str, Any]) -> dict[str, Any]:
    changes = parameter_changes(base.get("parameters") or {}, variant["parameters"])
    same_template = base.get("template") == variant["template"] and base.get("source") == variant["source"]
    return {"variant": name, "against": default,
            "parameters": [f"{key}: {_value(old)} \u2192 {_value(new)}" for key, old, new in changes],
            "sources": "" if base.get("source") == variant["source"] else f"{base.get('source')} \u2192 "
                                                                          f"{variant['source']}",
            "same_template": same_template, "diff": template_diff(base.get("template"), variant["template"])}


def _parameters(parameters: Mapping[str, Any]) -> list[str]:
    return [f"{key}={_value(value)}" for key, value in parameters.items()]


def _value(value: Any) -> str:
    return "\u2014" if value is None else value if isinstance(value, str) else json.dumps(value)


def variants_line(described: Mapping[str, Any]) -> str:
    """One short terminal line: each variant's source file and the parameters that differ between the node's
    variants, e.g. ``variants: classify: variant_0 classify_few_shot.jinja2 max_tokens=10; variant_1 ...``."""
    parts = []
    for node, variants in described.items():
        differing = [key for key in _all_keys(variants)
                     if len({_value(v["parameters"].get(key)) for v in variants.values()}) > 1]
        shown = [" ".join([name, v["source"].rsplit("/", 1)[-1],
                           *(f"{key}={_value(v['parameters'].get(key))}" for key in differing)]).strip()
                 for name, v in variants.items()]
        parts.append(f"{node}: {'; '.join(shown)}")
    line = "  variants: " + " | ".join(parts) if parts else ""
    return line if len(line) <= MAX_TERMINAL_LINE else line[: MAX_TERMINAL_LINE - 1] + "\u2026"


def _all_keys(variants: Mapping[str, Any]) -> list[str]:
    return list(dict.fromkeys(key for v in variants.values() for key in v["parameters"]))
