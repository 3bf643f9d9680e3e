"""Training features for long and GPU runs: --init-from, --bf16 / --device, bundles, the
second data tier's licences, clean stop on SIGTERM (tiny model, a few steps each)."""
from __future__ import annotations

import io
import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cod_fast.train import __main__ as trainer
from cod_fast.train.bundle import read_bundle, write_bundle
from cod_fast.train.data import plain_licence

TINY_JSON = (
    '{"enc":[8,8,8],"latent":8,"hyper":8,"hyper_latent":4,"dec":[8,8,8,8],'
    '"dec_blocks":[1,1,1,1],"enc_blocks":[1,1],"dct_base":false}'
)


def _fake_data(folder: Path, n: int = 6, val: bool = False) -> np.ndarray:
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (n, 16, 16, 3)).astype(np.float32)
    big = np.repeat(np.repeat(small, 8, axis=1), 8, axis=2).astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "crops.npy", big)
    if val:
        Image.fromarray(big[0]).save(folder / "val.png")
    (folder / "manifest.json").write_text(json.dumps({"packages": {"p": "1"}, "images": [{"file": "a.jpg", "licence": "CC0-1.0"}]}))
    return big


def _common(data: Path) -> list[str]:
    return ["--data", str(data), "--crop", "64", "--batch", "2", "--config", TINY_JSON, "--lambda", "0.01,0.02",
            "--log-every", "1", "--eval-every", "1000"]


def _model(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "last.pt", weights_only=True)["model"]


def test_init_from_checkpoint_and_folder(tmp_path: Path) -> None:
    from cod_fast.train.export import export

    _fake_data(tmp_path)
    trainer.main(_common(tmp_path) + ["--out", str(tmp_path / "a"), "--steps", "2"])
    a = _model(tmp_path / "a")
    # From a checkpoint: the weights start equal to the source's, the optimizer fresh, step 0.
    trainer.main(_common(tmp_path) + ["--out", str(tmp_path / "b"), "--steps", "5", "--stop-after", "0",
                                      "--init-from", str(tmp_path / "a" / "last.pt")])
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert b["step"] == 0 and not b["optimizer"]["state"]
    assert all(torch.equal(a[k], b["model"][k]) for k in a)
    # From an exported folder (float16 weights): equal to the rounded source.
    export(tmp_path / "a" / "last.pt", tmp_path / "w")
    trainer.main(_common(tmp_path) + ["--out", str(tmp_path / "c"), "--steps", "5", "--stop-after", "0",
                                      "--init-from", str(tmp_path / "w")])
    c = _model(tmp_path / "c")
    assert all(torch.equal(a[k].half().float(), c[k]) for k in a)
    # And it trains on from there.
    trainer.main(_common(tmp_path) + ["--out", str(tmp_path / "c"), "--steps", "5", "--stop-after", "1", "--resume"])
    assert not torch.equal(_model(tmp_path / "c")["g_s.proj_out.weight"], c["g_s.proj_out.weight"])
    with pytest.raises(FileNotFoundError):
        trainer.main(_common(tmp_path) + ["--out", str(tmp_path / "d"), "--init-from", str(tmp_path / "nope")])
    with pytest.raises(ValueError, match="do not fit"):  # another width: shapes differ
        trainer.main(_common(tmp_path) + ["--out", str(tmp_path / "e"), "--init-from", str(tmp_path / "a" / "last.pt"),
                                          "--config", TINY_JSON.replace('"latent":8', '"latent":16')])
    # --init-skip-mismatch: what fits is copied (the z density does not depend on the latent width).
    trainer.main(_common(tmp_path) + ["--out", str(tmp_path / "f"), "--init-from", str(tmp_path / "a" / "last.pt"),
                                      "--config", TINY_JSON.replace('"latent":8', '"latent":16'),
                                      "--init-skip-mismatch", "--steps", "3", "--stop-after", "0"])
    f = _model(tmp_path / "f")
    assert f["g_a.down3.weight"].shape[0] == 16
    assert all(torch.equal(f[k], a[k]) for k in a if k.startswith("density_z."))
    assert "fresh parameters: " in (tmp_path / "f" / "train.log").read_text()


def test_bf16_autocast_trains_on_cpu_and_resumes_exactly(tmp_path: Path) -> None:
    _fake_data(tmp_path)
    common = _common(tmp_path) + ["--bf16"]
    trainer.main(common + ["--out", str(tmp_path / "a"), "--steps", "3"])
    trainer.main(common + ["--out", str(tmp_path / "b"), "--steps", "3", "--stop-after", "1"])
    trainer.main(common + ["--out", str(tmp_path / "b"), "--steps", "3", "--resume"])
    a, b = _model(tmp_path / "a"), _model(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a) and all(v.dtype == torch.float32 for v in a.values())
    losses = [float(line.split()[3]) for line in (tmp_path / "a" / "train.log").read_text().splitlines()
              if line.startswith("step ")]
    assert len(losses) == 3 and all(np.isfinite(losses))


def test_keep_float32_modules_run_in_float32_under_autocast() -> None:
    from cod_fast.models.default.model import DefaultCodecModel, DefaultConfig

    torch.manual_seed(0)
    model = DefaultCodecModel(DefaultConfig.from_dict(json.loads(TINY_JSON)))
    seen: dict[str, torch.dtype] = {}
    model.h_s.conv3.register_forward_hook(lambda m, i, o: seen.__setitem__("h_s.conv3", o.dtype))
    model.h_s.conv2.register_forward_hook(lambda m, i, o: seen.__setitem__("h_s.conv2", o.dtype))
    trainer.keep_float32(model, "cpu")
    x = torch.rand(1, 3, 64, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, torch.zeros(1))
    assert seen == {"h_s.conv3": torch.float32, "h_s.conv2": torch.bfloat16}
    assert out["likelihoods_y"].dtype == torch.float32 and out["likelihoods_z"].dtype == torch.float32
    assert set(model.state_dict()) == set(DefaultCodecModel(model.cfg).state_dict())


def test_bundle_round_trip_size_limit_and_training(tmp_path: Path) -> None:
    bank = _fake_data(tmp_path / "data", n=6, val=True)
    meta = write_bundle(tmp_path / "data", tmp_path / "b.npz", max_mb=10, crop=64, seed=3)
    crops, val = read_bundle(tmp_path / "b.npz")
    assert meta["crops"] == 6 and crops.shape == (6, 64, 64, 3) and meta["bytes"] == (tmp_path / "b.npz").stat().st_size
    # Each stored crop is a 64-pixel window of its source crop, losslessly.
    for i, src in enumerate(meta["source_indexes"]):
        windows = [bank[src, t : t + 64, s : s + 64] for t in range(65) for s in range(65)]
        assert any(np.array_equal(crops[i], w) for w in windows)
    assert val is not None and np.array_equal(val, bank[0])
    assert meta["packages"] == {"p": "1"} and meta["images"][0]["licence"] == "CC0-1.0"
    # A tight limit keeps fewer crops, and the file stays under it.
    with np.load(tmp_path / "b.npz") as z:
        png_bytes, val_bytes = int(z["offsets"][-1]), int(z["val"].size)
    limit = 64 * 1024 + val_bytes + png_bytes // 2
    small = write_bundle(tmp_path / "data", tmp_path / "s.npz", max_mb=limit / 1e6, crop=64)
    assert 0 < small["crops"] < 6 and small["bytes"] <= limit
    # The trainer reads the bundle as it reads the folder.
    trainer.main(_common(tmp_path / "b.npz") + ["--out", str(tmp_path / "run"), "--steps", "1", "--eval-every", "1"])
    log = (tmp_path / "run" / "train.log").read_text()
    assert "step 1 loss" in log and "eval 1 q0:" in log
    (tmp_path / "bad.npz").write_bytes(b"not a bundle")
    with pytest.raises(ValueError, match="not a cod_fast training bundle"):
        read_bundle(tmp_path / "bad.npz")
    png = write_bundle(tmp_path / "data", tmp_path / "p.npz", max_mb=10, crop=64, seed=3, fmt="png")
    assert png["image_format"] == "png" and np.array_equal(read_bundle(tmp_path / "p.npz")[0], crops)
    with pytest.raises(ValueError, match="multiple of 64"):
        write_bundle(tmp_path / "data", tmp_path / "x.npz", crop=100)


def test_sigterm_stops_after_the_step_with_a_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_data(tmp_path)
    real = trainer.rd_loss

    def loss_then_term(*args: object) -> dict[str, torch.Tensor]:
        os.kill(os.getpid(), signal.SIGTERM)
        return real(*args)

    monkeypatch.setattr(trainer, "rd_loss", loss_then_term)
    trainer.main(_common(tmp_path) + ["--out", str(tmp_path / "r"), "--steps", "50", "--pid-file", str(tmp_path / "pid")])
    assert torch.load(tmp_path / "r" / "last.pt", weights_only=True)["step"] == 1
    assert "stopped (SIGTERM) at step 1" in (tmp_path / "r" / "train.log").read_text()
    assert (tmp_path / "pid").read_text().strip() == str(os.getpid())
    assert signal.getsignal(signal.SIGTERM) is not None  # handlers restored
    monkeypatch.setattr(trainer, "rd_loss", real)
    trainer.main(_common(tmp_path) + ["--out", str(tmp_path / "t"), "--steps", "50", "--time-limit", "0"])
    assert torch.load(tmp_path / "t" / "last.pt", weights_only=True)["step"] == 1
    assert "stopped (time limit) at step 1" in (tmp_path / "t" / "train.log").read_text()


def test_plain_licence_notices() -> None:
    gpl = ("This package is free software; you can redistribute it and/or modify it under the terms of the GNU "
           "General Public License as published by the Free Software Foundation; either version 2 of the License, "
           "or (at your option) any later version.")
    assert plain_licence(gpl) == "GPL-2+"
    assert plain_licence(gpl.replace(", or (at your option) any later version", "")) == "GPL-2"
    assert plain_licence(gpl.replace("GNU General", "GNU Lesser General")) == "LGPL-2+"
    assert plain_licence("All rights reserved.") is None


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_training_steps(tmp_path: Path) -> None:
    _fake_data(tmp_path)
    trainer.main(_common(tmp_path) + ["--out", str(tmp_path / "g"), "--steps", "2", "--device", "cuda", "--bf16"])
    ck = torch.load(tmp_path / "g" / "last.pt", weights_only=True)
    assert ck["step"] == 2 and all(v.device.type == "cpu" and torch.isfinite(v).all() for v in ck["model"].values())


def test_kodak_spot_check_runs_on_a_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("cod_fast.entropy")
    from cod_fast.train.check import load_checkpoint_model, main, webp_psnr_at

    _fake_data(tmp_path)
    trainer.main(_common(tmp_path) + ["--out", str(tmp_path / "a"), "--steps", "1"])
    rng = np.random.default_rng(1)
    img = np.repeat(np.repeat(rng.integers(0, 256, (12, 10, 3)), 8, 0), 8, 1).astype(np.uint8)  # 96 x 80
    Image.fromarray(img).save(tmp_path / "im.png")
    main(["--ckpt", str(tmp_path / "a" / "last.pt"), "--images", str(tmp_path / "im.png"), "--levels", "0,1"])
    out = capsys.readouterr().out
    assert "im.png level 1:" in out and "mean over images:" in out
    model = load_checkpoint_model(str(tmp_path / "a" / "last.pt"))
    assert not model.training and all(torch.equal(p, p.half().float()) for p in model.state_dict().values())
    # WebP at a size between its smallest and largest files is interpolated; outside: None.
    assert webp_psnr_at(img, 1) is None
    sizes = []
    for q in (0, 100):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="WEBP", quality=q, method=6)
        sizes.append(len(buf.getvalue()))
    p = webp_psnr_at(img, sum(sizes) // 2)
    assert p is not None and 10 < p < 60
    # the shipped model has the checkerboard context: refused, naming the route that measures it
    with pytest.raises(NotImplementedError, match="eval_kodak.py --weights DIR"):
        main(["--ckpt", "default", "--images", str(tmp_path / "im.png"), "--levels", "0"])


def test_weight_average_resumes_exactly_and_is_snapshotted(tmp_path: Path) -> None:
    _fake_data(tmp_path, val=True)
    common = _common(tmp_path) + ["--ema", "0.9", "--snapshot-every", "2", "--eval-every", "2"]
    trainer.main(common + ["--out", str(tmp_path / "a"), "--steps", "3"])
    trainer.main(common + ["--out", str(tmp_path / "b"), "--steps", "3", "--stop-after", "1"])
    trainer.main(common + ["--out", str(tmp_path / "b"), "--steps", "3", "--resume"])
    ca = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    cb = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert ca["ema_updates"] == cb["ema_updates"] == 3
    assert all(torch.equal(ca["ema"][k], cb["ema"][k]) for k in ca["ema"])
    # Decay min(0.9, (1 + n) / (10 + n)): 0.1, 0.18, 0.25 -- the average trails the weights.
    k = "g_s.proj_out.weight"
    assert not torch.equal(ca["ema"][k], ca["model"][k])
    snap = torch.load(tmp_path / "a" / "ema_2.pt", weights_only=True)
    assert snap["step"] == 2 and set(snap["model"]) == set(ca["model"]) and (tmp_path / "a" / "model_2.pt").exists()
    assert "eval-ema 2 q0:" in (tmp_path / "a" / "train.log").read_text()
    from cod_fast.train.export import export

    meta = export(tmp_path / "a" / "last.pt", tmp_path / "w", average=True)
    assert "release" not in meta
    from cod_fast.train.export import main as export_main

    export_main(["--ckpt", str(tmp_path / "a" / "last.pt"), "--out", str(tmp_path / "w4"), "--ema", "--release", "4"])
    meta4 = json.loads((tmp_path / "w4" / "default.json").read_text())
    assert meta4["release"] == 4 and meta4["sha256"] == meta["sha256"]
    with pytest.raises(SystemExit):
        export_main(["--ckpt", str(tmp_path / "a" / "last.pt"), "--out", str(tmp_path / "w0"), "--release", "0"])
    _, exported = trainer.init_source(str(tmp_path / "w"))
    assert meta["weights"] == "moving average" and torch.equal(exported[k], ca["ema"][k].half().float())
    _, avg = trainer.init_source(str(tmp_path / "a" / "last.pt") + "@ema")
    assert all(torch.equal(avg[k], ca["ema"][k]) for k in avg)
    with pytest.raises(ValueError, match="no moving average"):
        trainer.init_source(str(tmp_path / "a" / "model_2.pt") + "@ema")


def test_list_photos_reads_licences_and_sizes(tmp_path: Path) -> None:
    from cod_fast.train.data import PHOTO_MIN_SIDE, list_photos

    root = tmp_path / "raw" / "pkg"
    (root / "usr/share/doc/pkg").mkdir(parents=True)
    (root / "usr/share/doc/pkg/copyright").write_text(
        "Copyright: someone\n\nLicense:\n    under the terms of the GNU General Public License as published by the Free\n"
        "    Software Foundation; either version 2 of the License, or (at your option) any later version.\n")
    (root / "img").mkdir()
    Image.new("RGB", (PHOTO_MIN_SIDE + 10, PHOTO_MIN_SIDE)).save(root / "img" / "big.jpg")
    Image.new("RGB", (PHOTO_MIN_SIDE - 1, 900)).save(root / "img" / "small.jpg")
    found = list_photos(tmp_path, {"pkg": "1.0"}, {"pkg": ("img/*.jpg",)})
    assert [(s.path.name, s.licence, s.version) for s in found] == [("big.jpg", "GPL-2+", "1.0")]
    with pytest.raises(RuntimeError, match="no file matches"):
        list_photos(tmp_path, {"pkg": "1.0"}, {"pkg": ("img/*.png",)})
