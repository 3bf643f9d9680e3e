"""cod-fast CLI, run in-process through cod_fast.cli.main."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import cod_fast
from cod_fast.cli import main
from cod_fast.loading import save_model


@pytest.fixture(scope="module")
def model_file(one_step_codec, tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_model(one_step_codec, path)
    return str(path)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for name, (h, w) in {"a.png": (21, 30), "b.png": (64, 32)}.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / name)
    (folder / "notes.txt").write_text("ignored")
    return folder


def test_version_and_usage(capsys) -> None:
    assert main(["--version"]) == 0
    assert cod_fast.__version__ in capsys.readouterr().out
    assert main([]) == 2
    assert main(["compress", "x.png"]) == 2  # no --output / --model
    assert main(["frobnicate"]) == 2


def test_selfcheck(capsys) -> None:
    rc = main(["selfcheck"])
    out = capsys.readouterr().out
    assert "_C:" in out and "triton:" in out and "entropy:" in out
    assert rc in (0, 1) and (rc == 0) == ("FAILED" not in out)


def test_compress_info_decompress_folders(model_file, images, tmp_path, capsys) -> None:
    streams, recon = tmp_path / "streams", tmp_path / "recon"
    assert main(["compress", str(images), "-o", str(streams), "--model", model_file, "--seed", "3"]) == 0
    files = sorted(p.name for p in streams.iterdir())
    assert files == ["a.png.codf", "b.png.codf"]
    capsys.readouterr()
    assert main(["info", str(streams)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["height"], r["width"], r["codec"]) for r in rows] == [(21, 30, "COD_ONE_STEP"), (64, 32, "COD_ONE_STEP")]
    assert rows[0]["decode_params"]["seed"] == 3 and rows[1]["indices"] == {"bits": 4, "rows": 2, "cols": 1}
    assert main(["decompress", str(streams), "-o", str(recon), "--model", model_file]) == 0
    with Image.open(recon / "a.png") as im:
        assert im.size == (30, 21) and im.mode == "RGB"
    with Image.open(recon / "b.png") as im:
        assert im.size == (32, 64)


def test_official_cod_via_cli(model_file, images, tmp_path, capsys) -> None:
    out = tmp_path / "cod"
    assert main(["compress", str(images / "b.png"), "-o", str(out), "--model", model_file, "--official", "cod"]) == 0
    cod = out / "b.png.cod"
    assert cod.read_bytes()[:4] == bytes([64, 0, 32, 0])
    capsys.readouterr()
    assert main(["info", str(cod)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["height"], info["width"], info["payload_bytes"]) == (64, 32, 1)
    assert main(["decompress", str(cod), "-o", str(tmp_path / "r"), "--model", model_file]) == 0
    with Image.open(tmp_path / "r" / "b.png") as im:
        assert im.size == (32, 64)
    assert main(["decompress", str(cod), "-o", str(tmp_path / "r2")]) == 2  # .cod needs --model
    assert main(["compress", str(images / "a.png"), "-o", str(out), "--model", model_file, "--official", "cod"]) == 1


def test_bad_input_is_one_line(tmp_path, capsys) -> None:
    bad = tmp_path / "x.codf"
    bad.write_bytes(b"CODF\x01" + bytes(40))
    assert main(["info", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ChecksumError" in err and "Traceback" not in err
    assert main(["--debug", "info", str(bad)]) == 1
    assert "Traceback" in capsys.readouterr().err
    assert main(["info", str(tmp_path / "missing.codf")]) == 1
    assert main(["decompress", str(bad), "-o", str(tmp_path / "o")]) == 1
    assert main(["compress", str(tmp_path), "-o", str(tmp_path / "o"), "--model", "nope"]) == 1
