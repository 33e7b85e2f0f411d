"""`_core.pyi` documents the extension: every class, method and function it declares
exists in the built module, and every public item of the module is declared."""

from __future__ import annotations

import ast
from pathlib import Path

import pitstop
from pitstop import _core

STUB = Path(pitstop.__file__).with_name("_core.pyi")


def declared() -> dict[str, set[str]]:
    tree = ast.parse(STUB.read_text())
    out: dict[str, set[str]] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            out[node.name] = {n.name for n in node.body if isinstance(n, ast.FunctionDef)}
        elif isinstance(node, ast.FunctionDef):
            out[node.name] = set()
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            out[node.target.id] = set()
    return out


def test_stub_matches_the_built_module():
    stub = declared()
    for name, members in stub.items():
        assert hasattr(_core, name), f"_core.pyi declares {name}, the module lacks it"
        for m in members - {"__init__"}:
            assert hasattr(getattr(_core, name), m), f"_core.pyi declares {name}.{m}, the module lacks it"
    public = {n for n in dir(_core) if not n.startswith("_")} | {"__version__"}
    assert public <= set(stub), f"undocumented in _core.pyi: {sorted(public - set(stub))}"
    for cls in ["OnlineStore", "Reader"]:
        runtime = {n for n in dir(getattr(_core, cls)) if not n.startswith("__")}
        assert runtime <= stub[cls], f"undocumented {cls} members: {sorted(runtime - stub[cls])}"
