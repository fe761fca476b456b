"""Running one agent-framework workflow row (a MINIMAL STAND-IN: branch i15-worker's worker.py replaces it).

Standalone: stdlib and agent_framework only, run by the second environment's python.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path
from typing import Any, Callable, Mapping


def load_factory(path: str | Path, factory: str) -> Callable[..., Any]:
    """The function ``factory`` of the module at ``path`` (its folder importable, as for a script)."""
    path = Path(path).resolve()
    sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(f"workflow_{abs(hash(path))}", path)
    assert spec is not None and spec.loader is not None, f"{path} is not a Python module"
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    found = getattr(module, factory, None)
    if not callable(found):
        raise AttributeError(f"{path.name} has no function {factory!r}")
    return found  # type: ignore[no-any-return]


async def run_once(factory: Callable[..., Any], args: Mapping[str, Any], inputs: Mapping[str, Any],
                   output: str | None) -> dict[str, Any]:
    """A fresh workflow run on ``inputs``: its last output (or the one named ``output``) as a dict."""
    workflow = factory(**args)
    result = await workflow.run(_message(workflow.get_start_executor().input_types, inputs))
    outputs = result.get_outputs()
    if not outputs:
        raise ValueError("the workflow yielded no output; fix: call ctx.yield_output(...) in its last executor")
    if output is not None:
        named = [o for o in outputs if isinstance(o, dict) and output in o]
        return {output: named[-1][output]} if named else {output: outputs[-1]}
    return _as_dict(outputs[-1])


def _message(types: list[Any], inputs: Mapping[str, Any]) -> Any:
    kind = types[0] if types else str
    if kind in (str, int, float, bool):
        if len(inputs) != 1:
            raise ValueError(f"the start executor takes one {kind.__name__}, not inputs {', '.join(inputs)}")
        return kind(next(iter(inputs.values())))
    if isinstance(kind, type) and (dataclasses.is_dataclass(kind) or hasattr(kind, "model_fields")):
        return kind(**inputs)
    return dict(inputs)


def _as_dict(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        return {"output": value}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if hasattr(value, "model_dump"):
        return dict(value.model_dump())
    if hasattr(value, "text"):
        return {"output": value.text}
    return {"output": value}
