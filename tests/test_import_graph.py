"""The import graph of cod_fast points down: no cycle, layers respected, local imports say why.

Every module of ``cod_fast`` (and ``kernels/``, installed as ``cod_fast.kernels``) is parsed with
``ast``; nothing is imported. An edge A -> B means A imports B at module level or inside a
function (imports under ``if TYPE_CHECKING:`` are ignored). Importing ``a.b.c`` also runs the
``__init__`` of ``a.b`` and ``a``, so those are edges too, except towards A's own packages (which
are already being imported when A runs).
"""
from __future__ import annotations

import ast
import tokenize
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {"cod_fast": ROOT / "cod_fast", "cod_fast.kernels": ROOT / "kernels"}

#: Layers: a module under a key may not import (at any place) a module under one of the values.
FORBIDDEN = {
    "cod_fast.registry": ("cod_fast.",),  # a leaf: names no model, imports nothing of cod_fast
    "cod_fast.checkpoints": ("cod_fast.loading", "cod_fast.codecs", "cod_fast.models", "cod_fast.api", "cod_fast.cli"),
    "cod_fast.codecs": ("cod_fast.loading", "cod_fast.api", "cod_fast.cli"),
    "cod_fast.models": ("cod_fast.codecs", "cod_fast.loading", "cod_fast.api", "cod_fast.cli", "cod_fast._ext"),
    "cod_fast.bitstream": ("cod_fast.codecs", "cod_fast.models", "cod_fast.loading", "cod_fast.api"),
    "cod_fast.entropy": ("cod_fast.codecs", "cod_fast.models", "cod_fast.loading", "cod_fast.api"),
    "cod_fast.int_params.reference": ("cod_fast.",),  # the spec: plain torch only
    "cod_fast.kernels": ("cod_fast.models", "cod_fast.codecs", "cod_fast.loading", "cod_fast.api",
                         "cod_fast.int_params.api", "cod_fast.int_params.backends"),
}


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    line: int
    end_line: int
    targets: tuple[str, ...]  # cod_fast modules (or packages) it imports
    local: bool  # inside a function


@cache
def modules() -> dict[str, tuple[Path, bool]]:
    """module name -> (file, is a package __init__)."""
    out = {}
    for prefix, base in SOURCES.items():
        for path in sorted(base.rglob("*.py")):
            parts = list(path.relative_to(base).with_suffix("").parts)
            is_pkg = parts[-1] == "__init__"
            if is_pkg:
                parts = parts[:-1]
            out[".".join([prefix, *parts])] = (path, is_pkg)
    return out


def _targets(mod: str, is_pkg: bool, node: ast.Import | ast.ImportFrom) -> tuple[str, ...]:
    known = modules()
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        if node.level:
            base = mod.split(".") if is_pkg else mod.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            prefix = ".".join(base + ([node.module] if node.module else []))
        else:
            prefix = node.module or ""
        names = [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in known else prefix for a in node.names]
    return tuple(n for n in names if n == "cod_fast" or n.startswith("cod_fast."))


@cache
def imports() -> tuple[Import, ...]:
    out: list[Import] = []
    for mod, (path, is_pkg) in modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))

        def visit(node: ast.AST, in_function: bool) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                    continue
                local = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                if isinstance(child, (ast.Import, ast.ImportFrom)):
                    out.append(Import(mod, child.lineno, child.end_lineno or child.lineno,
                                      _targets(mod, is_pkg, child), local))
                visit(child, local)

        visit(tree, False)
    return tuple(out)


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def graph() -> dict[str, set[str]]:
    known = modules()
    g: dict[str, set[str]] = {m: set() for m in known}
    for imp in imports():
        own = set(_ancestors(imp.module))
        for target in imp.targets:
            for t in _ancestors(target):
                if t in known and t not in own:
                    g[imp.module].add(t)
    return g


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``g`` as a path [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def dfs(v: str) -> list[str] | None:
        state[v] = 1
        stack.append(v)
        for w in sorted(g[v]):
            if state.get(w) == 1:
                return stack[stack.index(w):] + [w]
            if w not in state:
                found = dfs(w)
                if found:
                    return found
        stack.pop()
        state[v] = 2
        return None

    for v in sorted(g):
        if v not in state:
            found = dfs(v)
            if found:
                return found
    return None


def _comments(path: Path) -> dict[int, str]:
    out = {}
    with path.open("rb") as f:
        for tok in tokenize.tokenize(f.readline):
            if tok.type == tokenize.COMMENT:
                out[tok.start[0]] = tok.string
    return out


def test_find_cycle_finds_one() -> None:  # the checker itself can fail
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_sources_found() -> None:
    known = modules()
    assert {"cod_fast", "cod_fast.loading", "cod_fast.codecs.sodec", "cod_fast.kernels.int_entropy_params"} <= set(known)
    assert len(imports()) > 100


def test_no_import_cycle() -> None:
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle (module-level and function-local imports): " + " -> ".join(cycle or [])


def test_layers_point_down() -> None:
    bad = []
    for imp in imports():
        for layer, banned in FORBIDDEN.items():
            if imp.module != layer and not imp.module.startswith(layer + "."):
                continue
            for t in imp.targets:
                if any(t == b or t.startswith(b if b.endswith(".") else b + ".") for b in banned):
                    bad.append(f"{imp.module}:{imp.line} imports {t}")
    assert not bad, "imports that climb a layer:\n" + "\n".join(sorted(set(bad)))


def test_registry_names_no_model() -> None:
    """Codecs register their named models themselves (``@registry.named_model``)."""
    tree = ast.parse((ROOT / "cod_fast" / "registry.py").read_text(encoding="utf-8"))
    calls = [n for n in tree.body if isinstance(n, ast.Expr) and isinstance(n.value, ast.Call)]
    assert not calls, "registry.py registers something at import time"
    for mod in ("cod_fast.codecs.default", "cod_fast.codecs.sodec"):
        src = modules()[mod][0].read_text(encoding="utf-8")
        assert "@registry.named_model(" in src, mod


def test_function_local_imports_say_why() -> None:
    """A function-local import must carry ``# local: <reason>`` (e.g. "import time" or "optional
    dependency (Triton)") on one of its lines or on the line above; dodging a cycle is no reason."""
    missing = []
    comments: dict[Path, dict[int, str]] = {}
    for imp in imports():
        if not imp.local:
            continue
        path = modules()[imp.module][0]
        if path not in comments:
            comments[path] = _comments(path)
        text = " ".join(comments[path].get(n, "") for n in range(imp.line - 1, imp.end_line + 1))
        reason = text.split("# local:", 1)[1].split("#")[0].strip() if "# local:" in text else ""
        if not reason:
            missing.append(f"{path.relative_to(ROOT)}:{imp.line}")
    assert not missing, "function-local imports without '# local: <reason>':\n" + "\n".join(missing)


def _imports_triton_at_module_level(path: Path) -> bool:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "triton" for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "triton":
            return True
    return False


def test_models_and_codecs_import_without_triton() -> None:
    """Importing a model, codec, the loader or the API never needs Triton (an optional dependency):
    no module-level import chain from them reaches a module that imports Triton at module level."""
    known = modules()
    triton_modules = {m for m, (path, _) in known.items() if _imports_triton_at_module_level(path)}
    assert "cod_fast.kernels.masked_conv" in triton_modules  # the check sees real kernel modules
    g: dict[str, set[str]] = {m: set() for m in known}
    for imp in imports():
        if imp.local:
            continue
        own = set(_ancestors(imp.module))
        for target in imp.targets:
            g[imp.module].update(t for t in _ancestors(target) if t in known and t not in own)
    roots = [m for m in known if m.startswith(("cod_fast.models", "cod_fast.codecs"))
             or m in ("cod_fast.loading", "cod_fast.api", "cod_fast.int_params.api")]
    bad = []
    for root in roots:
        seen, stack, parent = {root}, [root], {}
        while stack:
            v = stack.pop()
            if v in triton_modules:
                chain = [v]
                while chain[-1] != root:
                    chain.append(parent[chain[-1]])
                bad.append(" <- ".join(chain))
                break
            for w in g[v] - seen:
                seen.add(w)
                parent[w] = v
                stack.append(w)
    assert not bad, "module-level import chains that need Triton:\n" + "\n".join(bad)
