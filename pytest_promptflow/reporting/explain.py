"""What the page and the terminal say to explain a flow's results, read from the report document alone:
what each variant is (its template, its parameters, how it differs from the default variant) and the
figure each configuration was ranked on (``figures``), so "variant_1 wins" reads as "the few-shot prompt
wins, 0.62 [0.48, 0.75] against 0.51"."""

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
    moved = base.get("source") != variant["source"]
    return {"variant": name, "against": default,
            "parameters": [f"{key}: {_value(old)} \u2192 {_value(new)}" for key, old, new in changes],
            "sources": f"{base.get('source')} \u2192 {variant['source']}" if moved else "",
            "same_template": not moved and base.get("template") == variant["template"],
            "diff": template_diff(base.get("template"), variant["template"])}


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


def best_score(flow: Mapping[str, Any]) -> str:
    """The score the best configuration was chosen on, e.g. ``accuracy 0.62 [0.48, 0.75], mean over 2 datasets
    (50 rows)``; with split rows, its confirmation half's; "" when there is no best."""
    figure = (flow.get("figures") or {}).get(flow.get("best"))
    metric = flow.get("primary_metric")
    if figure is None or metric is None:
        return ""
    confirmed = (flow.get("selection") or {}).get("confirmation")
    if confirmed:
        return (f"{metric} {confirmed['mean']:.4g} [{confirmed['ci_low']:.2g}, {confirmed['ci_high']:.2g}] on the "
                f"confirmation half ({confirmed['n']} rows{_datasets(figure)})")
    if figure.get("n") is None:  # not a mean of per-row values: the cells' own values
        over = f", mean of {_over(figure)}" if figure.get("datasets", 1) > 1 else ""
        return f"{metric} {figure_text(figure)}{over}"
    return f"{metric} {figure_text(figure)}, mean over {_over(figure)}"


def figure_text(figure: Mapping[str, Any]) -> str:
    """``0.62 [0.48, 0.75]``: a figure and its 95% interval, when it has one."""
    interval = "" if figure.get("ci_low") is None else f" [{figure['ci_low']:.2g}, {figure['ci_high']:.2g}]"
    return f"{figure['mean']:.4g}{interval}"


def _over(figure: Mapping[str, Any]) -> str:
    datasets = figure.get("datasets") or 1
    if figure.get("n") is None:
        return f"{datasets} datasets' values" if datasets > 1 else "the dataset's value"
    half = " of the selection half" if figure.get("rows") == "selection half" else ""
    return f"{datasets} datasets ({figure['n']} rows{half})" if datasets > 1 else f"{figure['n']} rows{half}"


def _datasets(figure: Mapping[str, Any]) -> str:
    datasets = figure.get("datasets") or 1
    return f", {datasets} datasets" if datasets > 1 else ""


def configurations_view(flow: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each configuration with the figure the choice reads, best first, and what kept it from being chosen."""
    from .best import lower_is_better

    found = flow.get("figures") or {}
    metric = flow.get("primary_metric") or ""
    sign = -1 if lower_is_better(metric) else 1
    selection = flow.get("selection") or {}
    failing = {cell["config"] for cell in flow["cells"] if cell["outcome"] != "passed"}
    configs = list(dict.fromkeys(cell["config"] for cell in flow["cells"]))
    ranked = sorted(configs, key=lambda c: (c not in found, -sign * found[c]["mean"] if c in found else 0, c))
    view = []
    for config in ranked:
        figure = found.get(config)
        status = ("best" if config == flow.get("best") else "a cell did not pass" if config in failing
                  else "not scored on every dataset" if figure is None
                  else "tied with the best" if config in selection.get("tied_with", [])
                  else "dropped by Holm" if config in selection.get("dropped", []) else "")
        view.append({"config": config, "figure": figure, "text": "\u2014" if figure is None else figure_text(figure),
                     "rows": "" if figure is None or figure.get("n") is None else figure["n"], "status": status,
                     "best": config == flow.get("best"), "failing": config in failing})
    return view


def figure_heading(flow: Mapping[str, Any]) -> str:
    """What the figures are, e.g. ``accuracy, mean over 2 datasets (50 rows)``."""
    found = flow.get("figures") or {}
    figure = found.get(flow.get("best")) or next(iter(found.values()), None)
    if figure is None:
        return ""
    return f"{flow.get('primary_metric')}, {'mean of' if figure.get('n') is None else 'mean over'} {_over(figure)}"
