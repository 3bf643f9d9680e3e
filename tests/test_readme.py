"""README.md tells the truth: its two commands are what CI runs, its layout names what exists."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
CI = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
VENV_PREFIX = "python3 -m venv .venv && . .venv/bin/activate && "


def _code_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced block, in order."""
    return [(m.group(1), m.group(2)) for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.M | re.S)]


def _section(text: str, title: str) -> str:
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert m, f"README has no '## {title}' section"
    return m.group(1)


def test_two_commands_are_what_ci_runs() -> None:
    blocks = [body.strip() for lang, body in _code_blocks(README) if lang == "bash"][:2]
    assert len(blocks) == 2
    ci_lines = {line.strip() for line in CI.splitlines()}
    for body in blocks:
        assert "\n" not in body, f"README command is not one line: {body!r}"
        assert body.startswith(VENV_PREFIX), body  # CI makes its own fresh virtualenv first
        command = body[len(VENV_PREFIX):]
        assert command in ci_lines, f".ci/run does not run the README command {command!r}"
    assert "python3 -m venv" in CI


def _layout_entries() -> list[tuple[Path, str, bool]]:
    """(path, description, is a directory) of every entry of README's layout block; entries
    indented under ``cod_fast/`` are inside the package; continuation lines join the entry above."""
    blocks = _code_blocks(_section(README, "Layout"))
    assert blocks, "the Layout section has no code block"
    entries: list[tuple[Path, str, bool]] = []
    for line in blocks[0][1].splitlines():
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        head, _, desc = line.strip().partition("  ")
        if indent >= 10 or not head:  # a continuation of the entry above
            if entries:
                path, text, is_dir = entries[-1]
                entries[-1] = (path, text + " " + line.strip(), is_dir)
            continue
        base = ROOT / "cod_fast" if indent > 0 else ROOT
        for name in (n.strip() for n in head.split(",")):
            is_dir = name.endswith("/")
            entries.append((base / name.rstrip("/"), desc.strip(), is_dir))
    return entries


def test_layout_names_what_exists() -> None:
    entries = _layout_entries()
    assert len(entries) > 15
    missing = []
    for path, desc, is_dir in entries:
        if is_dir:
            if not path.is_dir():
                missing.append(f"{path.relative_to(ROOT)}/")
            # files and folders the description names must be in that folder (or at the root)
            for token in re.findall(r"[\w.-]+\.(?:py|sh|md|png|json|cpp)\b|\b\w+/(?=[\s,)]|$)", desc):
                name = token.rstrip("/")
                if not ((path / name).exists() or (ROOT / name).exists()):
                    missing.append(f"{path.relative_to(ROOT)}/{token} (named in its description)")
        elif not (path.exists() or path.with_suffix(".py").exists()):
            missing.append(str(path.relative_to(ROOT)))
    assert not missing, "README's layout names what does not exist:\n" + "\n".join(missing)


def test_every_package_folder_is_in_the_layout() -> None:
    named = {p for p, _, is_dir in _layout_entries() if is_dir}
    for sub in sorted((ROOT / "cod_fast").iterdir()):
        if sub.is_dir() and (sub / "__init__.py").exists():
            assert sub in named, f"README's layout does not name cod_fast/{sub.name}/"
