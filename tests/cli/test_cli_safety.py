"""The CLI on batches (issue 14 item 4): no file destroyed or half-written, bad files reported and
skipped, clear refusals of non-streams, unknown models and flags a codec does not take."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from cod_fast import cli
from cod_fast.cli import main

ROOT = Path(__file__).resolve().parents[2]


def _img(path: Path, seed: int, h: int = 20, w: int = 24) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def _tmp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


def _summary(err: str) -> dict[str, float]:
    m = re.search(r"(compressed|decompressed) (\d+) of (\d+) files, (\d+) stream bytes, mean ([\d.]+|-) bpp, "
                  r"(\d+) failed, [\d.]+ s", err)
    assert m, err
    return {"done": int(m[2]), "total": int(m[3]), "bytes": int(m[4]), "failed": int(m[6])}


def test_decompress_never_replaces_the_original(tmp_path, capsys) -> None:
    d = tmp_path / "d"
    photo = _img(d / "photo.png", 0)
    original = photo.read_bytes()
    assert main(["compress", str(photo), "-o", str(d)]) == 0
    assert (d / "photo.png.codf").is_file()
    assert main(["decompress", str(d), "-o", str(d)]) == 1  # would replace photo.png
    assert "exists" in capsys.readouterr().err
    assert photo.read_bytes() == original
    assert main(["decompress", str(d), "-o", str(d), "--skip-existing"]) == 0
    assert photo.read_bytes() == original
    assert main(["decompress", str(d), "-o", str(d), "--overwrite"]) == 0  # asked for: replaced
    assert photo.read_bytes() != original
    assert main(["decompress", str(d), "-o", str(d), "--overwrite", "--skip-existing"]) == 2
    assert not _tmp_files(tmp_path)


def test_compress_refuses_existing_and_overwrite_replaces(tmp_path, capsys) -> None:
    a = _img(tmp_path / "a.png", 1)
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.png.codf").write_bytes(b"keep me")
    assert main(["compress", str(a), "-o", str(out)]) == 1
    assert (out / "a.png.codf").read_bytes() == b"keep me"
    assert main(["compress", str(a), "-o", str(out), "--skip-existing"]) == 0
    assert (out / "a.png.codf").read_bytes() == b"keep me"
    capsys.readouterr()
    assert main(["compress", str(a), "-o", str(out), "--overwrite"]) == 0
    assert (out / "a.png.codf").read_bytes()[:4] == b"CODF"
    s = _summary(capsys.readouterr().err)
    assert (s["done"], s["total"], s["failed"]) == (1, 1, 0)
    assert s["bytes"] == (out / "a.png.codf").stat().st_size


def test_same_basename_keeps_relative_paths(tmp_path) -> None:
    x1, x2 = _img(tmp_path / "a" / "x.png", 2), _img(tmp_path / "b" / "x.png", 3)
    out = tmp_path / "out"
    assert main(["compress", str(x1), str(x2), "-o", str(out)]) == 0
    s1, s2 = out / "a" / "x.png.codf", out / "b" / "x.png.codf"
    assert s1.is_file() and s2.is_file() and s1.read_bytes() != s2.read_bytes()
    rec = tmp_path / "rec"
    assert main(["decompress", str(out), "-o", str(rec), "--recursive"]) == 0
    assert (rec / "a" / "x.png").is_file() and (rec / "b" / "x.png").is_file()


def test_two_folders_writing_one_output_refuse_before_writing(tmp_path, capsys) -> None:
    _img(tmp_path / "a" / "x.png", 4)
    _img(tmp_path / "b" / "x.png", 5)
    out = tmp_path / "out"
    assert main(["compress", str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(out)]) == 2
    assert "would both write" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


def test_bad_file_is_reported_and_the_batch_goes_on(tmp_path, capsys) -> None:
    src = tmp_path / "src"
    _img(src / "a.png", 6)
    (src / "b.png").write_bytes(b"not a png at all")
    _img(src / "c.png", 7)
    out = tmp_path / "out"
    assert main(["compress", str(src), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "b.png" in err and "Traceback" not in err
    s = _summary(err)
    assert (s["done"], s["total"], s["failed"]) == (2, 3, 1)
    assert sorted(p.name for p in out.iterdir()) == ["a.png.codf", "c.png.codf"]
    (out / "zz.png.codf").write_bytes(b"CODF" + bytes(60))  # a corrupt stream among good ones
    assert main(["decompress", str(out), "-o", str(tmp_path / "rec")]) == 1
    s = _summary(capsys.readouterr().err)
    assert (s["done"], s["failed"]) == (2, 1)
    assert sorted(p.name for p in (tmp_path / "rec").iterdir()) == ["a.png", "c.png"]


def test_recursive(tmp_path) -> None:
    _img(tmp_path / "src" / "top.png", 8)
    _img(tmp_path / "src" / "sub" / "deep.png", 9)
    assert main(["compress", str(tmp_path / "src"), "-o", str(tmp_path / "o1")]) == 0
    assert [p.name for p in (tmp_path / "o1").rglob("*.codf")] == ["top.png.codf"]
    assert main(["compress", str(tmp_path / "src"), "-o", str(tmp_path / "o2"), "--recursive"]) == 0
    assert sorted(str(p.relative_to(tmp_path / "o2")) for p in (tmp_path / "o2").rglob("*.codf")) == [
        os.path.join("sub", "deep.png.codf"), "top.png.codf"]


def test_info_and_decompress_reject_non_streams(tmp_path, capsys) -> None:
    photo = _img(tmp_path / "photo.png", 10, 40, 40)
    assert main(["info", str(photo)]) == 1
    err = capsys.readouterr().err
    assert "PNG image" in err and "Traceback" not in err and err.count("\n") == 1
    junk = tmp_path / "junk.cod"
    junk.write_bytes(bytes([0x11, 0x50, 0x4E, 0x47]) + os.urandom(777))
    assert main(["info", str(junk)]) == 1
    assert "neither a cod_fast container" in capsys.readouterr().err
    assert main(["decompress", str(photo), "-o", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "PNG image" in err and "Traceback" not in err
    assert not (tmp_path / "o" / "photo.png").exists()


def test_unknown_model_lists_presets_and_models_command(tmp_path, capsys) -> None:
    a = _img(tmp_path / "a.png", 11)
    assert main(["compress", str(a), "-o", str(tmp_path / "o"), "--model", "notamodel"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'notamodel'" in err and "sodec-tiny" in err and "pixel/bpp_0_0039_pix512_xl" in err
    assert main(["models"]) == 0
    names = [line.split("\t")[0] for line in capsys.readouterr().out.splitlines()]
    assert {"default", "sodec-tiny", "pixel/bpp_0_0039_pix512_xl", "one_step/bpp_0_0039"} <= set(names)


def test_flags_a_codec_does_not_take_are_usage_errors(tmp_path, capsys) -> None:
    a = _img(tmp_path / "a.png", 12)
    out = tmp_path / "o"
    assert main(["compress", str(a), "-o", str(out), "--steps", "4"]) == 2
    assert "--steps" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())
    assert main(["compress", str(a), "-o", str(out)]) == 0
    capsys.readouterr()
    assert main(["decompress", str(out), "-o", str(tmp_path / "r"), "--steps", "5"]) == 2
    err = capsys.readouterr().err
    assert "usage error" in err and "--steps" in err and "Traceback" not in err
    assert main(["compress", str(a), "-o", str(tmp_path / "s"), "--model", "sodec-tiny", "--quality", "2"]) == 2


def test_interrupt_leaves_no_partial_file(tmp_path, capsys, monkeypatch) -> None:
    a = _img(tmp_path / "a.png", 13)
    out = tmp_path / "out"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.os, "link", interrupted)  # Ctrl-C after the temp file is written
    assert main(["compress", str(a), "-o", str(out)]) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "interrupted" in err and "Traceback" not in err
    assert not (out / "a.png.codf").exists() and not _tmp_files(tmp_path)


_SIGINT_SCRIPT = r"""
import os, signal, sys, time
import cod_fast.cli as cli
real_fsync = os.fsync
def fsync(fd):  # a real SIGINT in the middle of writing the output
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(5)
    real_fsync(fd)
cli.os.fsync = fsync
sys.exit(cli.main(sys.argv[1:]))
"""


def test_sigint_subprocess_exit_130(tmp_path) -> None:
    a = _img(tmp_path / "a.png", 14)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", _SIGINT_SCRIPT, "compress", str(a), "-o", str(out)],
                       check=False, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 130, r.stderr
    assert r.stderr.strip().count("\n") == 0 and "interrupted" in r.stderr
    assert not (out / "a.png.codf").exists() and not _tmp_files(tmp_path)


def test_help_does_not_import_torch() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "cod_fast", "--help"],
                       check=False, capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0 and "compress" in r.stdout
    imported = {line.split("|")[-1].strip() for line in r.stderr.splitlines() if "|" in line}
    assert "torch" not in imported and "numpy" not in imported
