"""The default model's checkerboard context (``DefaultConfig.context``): config, the zero start
(released transforms + a fresh context = their likelihoods without one), the two-pass dependency structure and
the training gradients."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from cod_fast.int_params.reference import anchor_mask
from cod_fast.models.default.model import (
    DefaultCodecModel,
    DefaultConfig,
    add_checkerboard_context,
    remove_checkerboard_context,
)

SMALL = DefaultConfig(enc=(8, 8, 8), latent=8, hyper=8, hyper_latent=4, dec=(8, 8, 8, 8), dec_blocks=(1, 1, 1, 1),
                      lambdas=(0.005, 0.01, 0.02), dct_base=False, unit_hyper=True,
                      context="checkerboard", context_kernel=5, context_hidden=6)


def test_config_context_keys() -> None:
    plain = DefaultConfig()
    assert plain.context == "none" and "context" not in plain.to_dict()  # release 2's config unchanged
    d = SMALL.to_dict()
    assert d["context"] == "checkerboard" and DefaultConfig.from_dict(d) == SMALL
    for bad in ({"context": "channel"}, {"context_kernel": 4}, {"context_hidden": 0}):
        with pytest.raises(ValueError):
            dataclasses.replace(SMALL, **bad)
    assert DefaultCodecModel(DefaultConfig(**{**plain.__dict__, "latent": 768})).context is None


@pytest.fixture(scope="module")
def shipped():
    from cod_fast.models.default import load_default_model

    return load_default_model()


def test_released_weights_with_fresh_context_give_todays_likelihoods(shipped) -> None:
    """The shipped transforms without their context (remove_checkerboard_context), then a fresh
    one: the same likelihoods and pixels as without any."""
    shipped = remove_checkerboard_context(shipped)
    assert shipped.context is None and shipped.cfg.context == "none"
    with pytest.raises(ValueError):
        remove_checkerboard_context(shipped)
    net2 = add_checkerboard_context(shipped, seed=3)
    assert net2.cfg.context == "checkerboard" and not net2.training
    assert float(net2.context.conv1.weight.detach().abs().sum()) > 0  # only the output layer starts at zero
    x = torch.rand(1, 3, 64, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for q in (0.0, 1.37):
            a, b = shipped(x, q), net2(x, q)
            for k in ("likelihoods_y", "likelihoods_z", "x_hat"):
                assert torch.equal(a[k], b[k]), (q, k)
            assert torch.equal(shipped.rate_forward(x, q)["likelihoods_y"], net2.rate_forward(x, q)["likelihoods_y"])


def _small(seed: int = 0) -> DefaultCodecModel:
    torch.manual_seed(seed)
    net = DefaultCodecModel(SMALL).eval()
    with torch.no_grad():
        for p in net.context.conv2.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
        net.log_gain.add_(3.0)  # y of a few units: rounding keeps non-zero anchors
    return net


def test_non_anchor_parameters_read_only_decoded_anchors() -> None:
    net = _small()
    g = torch.Generator().manual_seed(1)
    y = torch.randn(1, 8, 8, 8, generator=g) * 3
    z = torch.randint(-3, 4, (1, 4, 2, 2), generator=g).float()
    gain = net._gain(net.log_gain, torch.tensor([1.0]))
    with torch.no_grad():
        s0, m0 = net.h_s(z, gain)
        s, m = net._y_params(y, z, gain)
        anchors = anchor_mask(8, 8)
        # anchors: the hyperprior alone; non-anchors: changed by the (non-zero) context
        assert torch.equal(s[..., anchors], s0[..., anchors]) and torch.equal(m[..., anchors], m0[..., anchors])
        assert not torch.equal(m[..., ~anchors], m0[..., ~anchors])
        # y at non-anchors does not reach any parameter; y at an anchor reaches its neighbours
        y2 = torch.where(anchors, y, y + 5.0)
        s2, m2 = net._y_params(y2, z, gain)
        assert torch.equal(s2, s) and torch.equal(m2, m)
        y3 = y.clone()
        y3[0, :, 4, 4] += 5.0
        s3, m3 = net._y_params(y3, z, gain)
        changed = ((s3 != s) | (m3 != m)).any(1)[0]
        assert bool(changed[4, 5]) and bool(changed[3, 4]) and not bool(changed[4, 4])
        assert not bool(changed[anchors].any())


def test_training_forward_trains_the_context() -> None:
    net = _small().train()
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    out = net(x, torch.tensor([0.0, 1.5]))
    assert out["likelihoods_y"].shape == (2, 8, 4, 4)
    bits = -torch.log2(out["likelihoods_y"]).sum()
    bits.backward()
    for p in (net.context.conv1.weight, net.context.conv2.weight, net.g_a.down3.weight):
        assert p.grad is not None and float(p.grad.abs().sum()) > 0
    # the checkerboard mask holds on the gradient path too: masked taps get no gradient
    assert float(net.context.conv1.weight.grad[:, :, 2, 2].abs().sum()) == 0.0
    assert any(p is net.context.conv1.weight for p in net.entropy_parameters())


def test_trainer_accepts_the_context_config(tmp_path) -> None:
    """``python -m cod_fast.train --config '{..., "context": "checkerboard"}'`` trains the context
    (smoke test: two steps of a tiny model; the context's output layer leaves zero)."""
    import numpy as np

    from cod_fast.train.__main__ import main

    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (4, 16, 16, 3)).astype(np.float32)
    np.save(tmp_path / "crops.npy", np.repeat(np.repeat(small, 4, axis=1), 4, axis=2).astype(np.uint8))
    cfg = ('{"enc":[8,8,8],"latent":8,"hyper":8,"hyper_latent":4,"dec":[8,8,8,8],"dec_blocks":[1,1,1,1],'
           '"enc_blocks":[1,1],"dct_base":false,"unit_hyper":true,"context":"checkerboard","context_hidden":4}')
    main(["--data", str(tmp_path), "--crop", "64", "--batch", "2", "--config", cfg, "--lambda", "0.01,0.02",
          "--log-every", "1", "--eval-every", "1000", "--out", str(tmp_path / "run"), "--steps", "2"])
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert ckpt["config"]["context"] == "checkerboard"
    assert float(ckpt["model"]["context.conv2.weight"].abs().sum()) > 0
