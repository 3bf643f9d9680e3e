"""cod-fast eval: rate points, metrics, CompressAI JSON layout, the RD plot, errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from batch_helpers import make_image
from PIL import Image

from cod_fast.cli import main
from cod_fast.evaluate import evaluate, rate_points
from cod_fast.metrics import psnr


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("eval_images")
    for i, (h, w) in enumerate([(40, 52), (64, 48)]):
        Image.fromarray(make_image(h, w, seed=i).permute(1, 2, 0).numpy()).save(d / f"img{i}.png")
    (d / "notes.txt").write_text("not an image")
    return d


def test_cli_eval_writes_compressai_json_and_plot(folder, tmp_path, capsys, default_codec) -> None:
    out, plot = tmp_path / "r.json", tmp_path / "rd.png"
    assert main(["eval", str(folder), "--levels", "0,4", "--json", str(out), "--plot", str(plot), "-q"]) == 0
    printed = capsys.readouterr().out
    assert "2 image(s), 2 point(s)" in printed
    res = json.loads(out.read_text())
    assert set(res) >= {"name", "description", "results", "per_image", "levels", "meta"}
    r = res["results"]
    assert set(r) == {"bpp", "psnr-rgb", "ms-ssim-rgb", "encoding_time", "decoding_time"}
    assert res["levels"] == [0.0, 4.0] and all(len(v) == 2 for v in r.values())
    assert r["bpp"][0] < r["bpp"][1] and r["psnr-rgb"][0] < r["psnr-rgb"][1]
    # per-image figures are the ones encode/decode give; the means are their means
    for name, curves in res["per_image"].items():
        img = torch.from_numpy(np.array(Image.open(folder / name).convert("RGB"))).permute(2, 0, 1)
        for k, lv in enumerate((0.0, 4.0)):
            data = default_codec.encode(img, quality=lv)
            assert curves["bpp"][k] == 8 * len(data) / (img.shape[1] * img.shape[2])
            assert curves["psnr-rgb"][k] == pytest.approx(psnr(img, default_codec.decode(data)), abs=1e-9)
    assert r["bpp"][1] == pytest.approx(sum(c["bpp"][1] for c in res["per_image"].values()) / 2)
    pytest.importorskip("matplotlib")
    assert plot.stat().st_size > 1000


def test_json_reads_as_compressai_plot_reads_it(folder, tmp_path) -> None:
    """compressai.utils.plot's parse_json_file: ``data["results"]`` (or the top level), then
    ``results["bpp"]`` and ``results[metric]``, ``data.get("name")`` (its import takes ~10 s here,
    so its reading is mirrored rather than imported)."""
    res = evaluate(folder, levels=[1, 2], msssim=False, name="mine")
    f = tmp_path / "r.json"
    f.write_text(json.dumps(res.to_json()))
    data = json.loads(f.read_text())
    results = data["results"]
    assert data.get("name") == "mine"
    assert results["bpp"] == res.results()["bpp"] and results["psnr-rgb"] == res.results()["psnr-rgb"]
    assert all(isinstance(v, float) for v in results["bpp"] + results["psnr-rgb"])
    assert "ms-ssim-rgb" not in results  # --no-msssim


def test_rate_points_and_errors(one_step_codec, default_codec, tmp_path) -> None:
    assert rate_points(default_codec) == [{"quality": float(v)} for v in range(default_codec.levels)]
    assert rate_points(one_step_codec) == [{}]
    with pytest.raises(ValueError, match="one rate"):
        rate_points(one_step_codec, [1])
    with pytest.raises(ValueError, match="outside"):
        rate_points(default_codec, [9])
    with pytest.raises(ValueError, match="no images"):
        evaluate(tmp_path)
    assert main(["eval", str(tmp_path / "missing")]) == 1
    assert main(["eval", str(tmp_path), "--levels", "a,b"]) == 1


def test_eval_refine_encodes_with_latent_refinement(folder, one_step_codec, default_codec) -> None:
    """``refine`` reaches the default model's encode (the figures are those of ``encode(refine=2)``);
    a one-rate codec refuses it."""
    res = evaluate(folder, default_codec, levels=[1], msssim=False, refine=2)
    for name, curves in res.to_json()["per_image"].items():
        img = torch.from_numpy(np.array(Image.open(folder / name).convert("RGB"))).permute(2, 0, 1)
        assert curves["bpp"][0] == 8 * len(default_codec.encode(img, quality=1.0, refine=2)) / (img.shape[1] * img.shape[2])
    with pytest.raises(ValueError, match="refine"):
        evaluate(folder, one_step_codec, refine=2)
