"""Loading is bounded (issue 14, item 6): YAML aliases, network size and malformed metadata are
refused with a ModelFileError naming the file, before anything large is built or expanded."""
from __future__ import annotations

import copy
import json

import pytest
import torch
import yaml
from safetensors.torch import save_file
from tiny_models import TINY_PIXEL

import cod_fast.checkpoints as checkpoints
import cod_fast.loading as loading
from cod_fast.checkpoints import METADATA_KEY, check_build_size, read_checkpoint
from cod_fast.errors import ModelFileError
from cod_fast.loading import load_model, parse_config


def _laughs_yaml() -> str:
    """925 bytes: nine levels of nine aliases, 9**9 (387 M) strings once expanded."""
    lines = ["# billion laughs, CoD edition", 'lol1: &lol1 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in range(2, 10):
        lines.append(f"lol{level}: &lol{level} [" + ",".join([f"*lol{level - 1}"] * 9) + "]")
    lines += ["model:", "  denoiser:", "    class_path: cod.models.pixel_dit.PixNerDiT",
              "    init_args: {hidden_size: *lol9}"]
    text = "\n".join(lines) + "\n"
    return text + "#" * (924 - len(text)) + "\n"


def test_nested_alias_yaml_refused(tmp_path) -> None:
    text = _laughs_yaml()
    assert len(text.encode()) == 925
    path = tmp_path / "laughs.yaml"
    path.write_text(text)
    with pytest.raises(ModelFileError, match="aliases") as info:
        load_model(path, random_init_seed=0)
    assert str(path) in str(info.value)


def test_expanded_size_refused_below_the_alias_limit(tmp_path) -> None:
    # three aliases, each repeating a sequence of 50k scalars: few aliases, many nodes
    path = tmp_path / "wide.yaml"
    path.write_text("a: &a [" + ",".join(["1"] * 50_000) + "]\nb: [*a, *a, *a]\n")
    with pytest.raises(ModelFileError, match="entries") as info:
        parse_config(path)
    assert str(path) in str(info.value)
    shared = list(range(1000))
    with pytest.raises(ModelFileError, match="entries"):
        parse_config({**TINY_PIXEL, "init_args": {**TINY_PIXEL["init_args"], "x": [shared] * 200}})


def test_a_few_aliases_are_fine(tmp_path) -> None:
    args = dict(TINY_PIXEL["init_args"])
    doc = {"defaults": args, "model": {"denoiser": {"class_path": TINY_PIXEL["class_path"], "init_args": args}}}
    path = tmp_path / "aliased.yaml"
    path.write_text(yaml.safe_dump(doc))  # safe_dump writes the shared dict as an anchor + alias
    assert "*" in path.read_text()
    spec = parse_config(path)
    assert spec.init_args == args


def test_oversized_config_file_refused(tmp_path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("# " + "x" * loading.MAX_CONFIG_BYTES + "\n")
    with pytest.raises(ModelFileError, match="bytes") as info:
        parse_config(path)
    assert str(path) in str(info.value)


def _safetensors(path, config, tensors=None) -> None:
    save_file(tensors or {"w": torch.zeros(1)}, str(path), metadata={METADATA_KEY: json.dumps(config)})


def test_huge_network_refused_before_any_allocation(tmp_path, monkeypatch) -> None:
    cfg = copy.deepcopy(TINY_PIXEL)
    cfg["init_args"]["hidden_size"] = 65536
    path = tmp_path / "huge.safetensors"
    _safetensors(path, cfg)
    assert path.stat().st_size < 1000
    real = loading._resolve_class
    devices: list[str] = []

    def recording(class_path: str) -> type:
        cls = real(class_path)

        class Recorded(cls):  # type: ignore[misc, valid-type]
            def __init__(self, *a, **kw) -> None:
                devices.append(torch.empty(0).device.type)  # where this build would allocate
                super().__init__(*a, **kw)

        return Recorded

    monkeypatch.setattr(loading, "_resolve_class", recording)
    with pytest.raises(ModelFileError, match="too large|more than") as info:
        load_model(checkpoint=path)
    assert str(path) in str(info.value)
    assert devices == ["meta"]  # only the meta-device build ran


def test_check_build_size_counts_parameters_and_buffers() -> None:
    assert check_build_size(lambda: torch.nn.BatchNorm1d(4), "x") == 4 + 4 + 4 + 4 + 1
    with pytest.raises(ModelFileError, match="src: .*more than the 10 allowed"):
        check_build_size(lambda: torch.nn.Linear(3, 4), "src", limit=10)
    state = torch.random.get_rng_state()
    check_build_size(lambda: torch.nn.Linear(300, 400), "x")
    assert torch.equal(state, torch.random.get_rng_state())  # the meta build leaves the RNG alone


@pytest.mark.parametrize("raw, what", [("{not json", "not valid JSON"), ("[1, 2]", "not a JSON object")])
def test_malformed_metadata_names_the_file(tmp_path, raw: str, what: str) -> None:
    path = tmp_path / "bad.safetensors"
    save_file({"w": torch.zeros(1)}, str(path), metadata={METADATA_KEY: raw})
    for call in (lambda: read_checkpoint(path), lambda: load_model(checkpoint=path)):
        with pytest.raises(ModelFileError, match=what) as info:
            call()
        assert str(path) in str(info.value)


def test_config_errors_name_the_file(tmp_path) -> None:
    cfg = copy.deepcopy(TINY_PIXEL)
    cfg["init_args"]["num_blocks"] = -1
    path = tmp_path / "negative.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ModelFileError, match="num_blocks") as info:
        load_model(path, random_init_seed=0)
    assert str(path) in str(info.value)
    stored = tmp_path / "noclass.safetensors"
    _safetensors(stored, {"init_args": {}})
    with pytest.raises(ModelFileError, match="class_path") as info:
        load_model(checkpoint=stored)
    assert str(stored) in str(info.value)


def test_sodec_config_bounded_and_named(tmp_path, monkeypatch) -> None:
    from cod_fast.codecs.sodec import NAMED_MODELS

    cfg = NAMED_MODELS["sodec-tiny"][0].to_dict()
    bad = tmp_path / "bad_sodec.json"
    bad.write_text(json.dumps({**cfg, "hyperprior": {**cfg["hyperprior"], "n": "eight"}}))
    with pytest.raises(ModelFileError) as info:
        load_model(bad, random_init_seed=0)
    assert str(bad) in str(info.value)
    good = tmp_path / "sodec.json"
    good.write_text(json.dumps(cfg))
    monkeypatch.setattr(checkpoints, "MAX_NET_ELEMENTS", 1000)  # the tiny model is too large now
    with pytest.raises(ModelFileError, match="more than") as info:
        load_model(good, random_init_seed=0)
    assert str(good) in str(info.value)
