"""registry.named_model: codecs register their named models themselves; the registry names none."""
from __future__ import annotations

import pytest

from cod_fast import registry


class _Fake:
    def __init__(self, fingerprint: bytes) -> None:
        self.fingerprint = fingerprint


def test_named_model_decorator_registers_each_name() -> None:
    calls: list[str] = []

    @registry.named_model("test-a", "test-b")
    def load(name: str) -> _Fake:
        calls.append(name)
        return _Fake(name.encode().ljust(16, b"\0"))

    try:
        assert load("x").fingerprint.startswith(b"x")  # the function is returned unchanged
        assert {"test-a", "test-b"} <= set(registry.named())
        found = registry.find(b"test-b".ljust(16, b"\0"))
        assert found is not None and found.fingerprint.startswith(b"test-b")
        assert "test-b" in calls
    finally:
        registry.unregister_named("test-a")
        registry.unregister_named("test-b")
    assert not {"test-a", "test-b"} & set(registry.named())


def test_named_model_needs_names() -> None:
    with pytest.raises(TypeError):
        registry.named_model()
    with pytest.raises(TypeError):
        registry.named_model("")


def test_codecs_register_their_named_models() -> None:
    import cod_fast.codecs  # noqa: F401  (importing the codecs registers them)

    assert {"default", "sodec-tiny", "sodec-tiny-checkerboard"} <= set(registry.named())
