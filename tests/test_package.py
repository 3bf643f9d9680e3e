"""Package-level contracts: import without optional pieces, README/CI agreement, error types."""
import re
import subprocess
import sys
from pathlib import Path

import cod_fast

ROOT = Path(__file__).resolve().parents[1]


def _bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)\n```", text, flags=re.S)


def test_readme_starts_with_the_two_commands_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    blocks = _bash_blocks(readme)
    assert len(blocks) >= 2
    for block in blocks[:2]:
        # Each README command is "make a venv && activate && <install and run>"; CI makes its
        # own venv, then must run the <install and run> part verbatim.
        payload = block.split(". .venv/bin/activate && ", 1)[1]
        assert payload in ci, f"CI does not run the README command: {payload!r}"


def test_version_is_pep440() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+", cod_fast.__version__)


def test_import_without_triton_or_extension() -> None:
    # Block triton and the compiled extension; `import cod_fast` must still work.
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'triton' or name.startswith('triton.') or name.startswith('cod_fast._C'):\n"
        "            raise ImportError('blocked for the test: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import cod_fast, cod_fast._ext as e\n"
        "a = e.availability()\n"
        "assert a['_C'] != 'ok' and a['triton'] != 'ok', a\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_error_hierarchy() -> None:
    assert issubclass(cod_fast.BitstreamError, ValueError)
    err = cod_fast.ModelMismatchError("aaaa", "bbbb")
    assert "aaaa" in str(err) and "bbbb" in str(err)


def test_unknown_attribute() -> None:
    try:
        cod_fast.no_such_thing  # noqa: B018
    except AttributeError as exc:
        assert "no_such_thing" in str(exc)
    else:
        raise AssertionError("expected AttributeError")
