"""Every GPU-only test carries the ``cuda`` marker (``pytest -m "not cuda"`` / ``-m cuda`` select them).

A test is GPU-only when it is skipped by ``skipif(not torch.cuda.is_available() ...)``: as a
decorator, through a module-level name bound to such a mark, in ``pytestmark`` or in the marks of a
``pytest.param``. The test files are parsed with ``ast``; nothing is imported.
"""
from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def _is_gpu_skip(node: ast.AST, names: dict[str, ast.AST]) -> bool:
    if isinstance(node, ast.Name) and node.id in names:
        return _is_gpu_skip(names[node.id], names)
    if isinstance(node, (ast.List, ast.Tuple)):
        return any(_is_gpu_skip(e, names) for e in node.elts)
    return (isinstance(node, ast.Call) and ast.unparse(node.func).endswith("mark.skipif") and bool(node.args)
            and "not torch.cuda.is_available()" in ast.unparse(node.args[0]))


def _has_cuda_mark(nodes: list[ast.AST], names: dict[str, ast.AST]) -> bool:
    for node in nodes:
        if isinstance(node, ast.Name) and node.id in names:
            if _has_cuda_mark([names[node.id]], names):
                return True
        elif isinstance(node, (ast.List, ast.Tuple)):
            if _has_cuda_mark(list(node.elts), names):
                return True
        elif ast.unparse(node).endswith("mark.cuda"):
            return True
    return False


def unmarked(source: str) -> list[str]:
    """Names (or line numbers) of GPU-only tests of ``source`` without the ``cuda`` marker."""
    tree = ast.parse(source)
    names = {t.id: n.value for n in tree.body if isinstance(n, ast.Assign)
             for t in n.targets if isinstance(t, ast.Name)}
    module_marks = names.get("pytestmark")
    module_cuda = module_marks is not None and _has_cuda_mark([module_marks], names)
    if module_marks is not None and _is_gpu_skip(module_marks, names) and not module_cuda:
        return ["pytestmark"]
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            decos = node.decorator_list
            if any(_is_gpu_skip(d, names) for d in decos) and not (module_cuda or _has_cuda_mark(decos, names)):
                bad.append(node.name)
        elif isinstance(node, ast.Call) and ast.unparse(node.func).endswith("pytest.param"):
            marks = [k.value for k in node.keywords if k.arg == "marks"]
            if marks and _is_gpu_skip(marks[0], names) and not (module_cuda or _has_cuda_mark(marks, names)):
                bad.append(f"pytest.param at line {node.lineno}")
    return bad


def test_checker_finds_unmarked_tests() -> None:
    src = (
        "import pytest, torch\n"
        "gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason='gpu')\n"
        "@gpu\ndef test_a(): pass\n"
        "@pytest.mark.cuda\n@gpu\ndef test_b(): pass\n"
        "@pytest.mark.skipif(not torch.cuda.is_available(), reason='gpu')\ndef test_c(): pass\n"
        "P = [pytest.param(1, marks=pytest.mark.skipif(not torch.cuda.is_available(), reason='x'))]\n"
        "@pytest.mark.skipif(torch.cuda.is_available(), reason='cpu only')\ndef test_d(): pass\n"
    )
    assert unmarked(src) == ["test_a", "test_c", "pytest.param at line 10"]


def test_gpu_only_tests_are_marked_cuda() -> None:
    bad = []
    for path in sorted(TESTS.rglob("*.py")):
        if path.name == Path(__file__).name:
            continue
        bad += [f"{path.relative_to(TESTS)}: {name}" for name in unmarked(path.read_text(encoding="utf-8"))]
    assert not bad, "GPU-only tests without @pytest.mark.cuda:\n" + "\n".join(bad)
