"""``_core.pyi`` documents the extension exactly: same names, same signatures."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pitstop
from pitstop import _core

STUB = Path(pitstop.__file__).with_name("_core.pyi")


def stub_items() -> dict[str, ast.AST]:
    tree = ast.parse(STUB.read_text())
    out: dict[str, ast.AST] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            out[node.name] = node
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            out[node.target.id] = node
    return out


def test_stub_names_match_module():
    public = {n for n in dir(_core) if not n.startswith("_")} | {"__version__"}
    assert set(stub_items()) == public


def test_stub_function_parameters_match():
    for name, node in stub_items().items():
        if not isinstance(node, ast.FunctionDef):
            continue
        sig = inspect.signature(getattr(_core, name))
        stub_params = [a.arg for a in node.args.args + node.args.kwonlyargs]
        assert list(sig.parameters) == stub_params, name


def test_stub_classes_match_both_ways():
    """Every method the stub declares exists, and every public member is declared."""
    for name, node in stub_items().items():
        if not isinstance(node, ast.ClassDef):
            continue
        declared = {item.name for item in node.body if isinstance(item, ast.FunctionDef)}
        cls = getattr(_core, name)
        for m in declared - {"__init__"}:
            assert hasattr(cls, m), f"_core.pyi declares {name}.{m}, the module lacks it"
        runtime = {n for n in dir(cls) if not n.startswith("__")}
        assert runtime <= declared, f"undocumented {name} members: {sorted(runtime - declared)}"
