"""Registry of models by fingerprint, so that ``cod_fast.decode(data)`` can find its model.

Two kinds of entries:

* loaded codecs: every codec built by ``load_model`` (or registered with ``register``) is kept
  by weak reference under its 16-byte fingerprint; dropping the codec drops the entry;
* named models: ``register_named(name, loader, fingerprint=None)`` records how to load a model
  (a zero-argument callable returning a codec). ``find`` loads a named model only when its
  recorded fingerprint matches, or when its fingerprint is not yet known (then it is loaded once
  and its fingerprint remembered);
* retired models: ``retire(fingerprint, note)`` records a model this version no longer ships
  (e.g. an earlier release of the default model) so that the error for one of its streams says
  what wrote it and where it still decodes (``retired(fingerprint)``).

This module names no model: each codec module registers its named models itself, with the
``named_model`` decorator (as CompressAI's model zoo does), when it is imported; ``cod_fast.api``
imports the codecs before it looks a fingerprint up.
"""
from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, TypeVar

_lock = threading.Lock()
_loaded: "weakref.WeakValueDictionary[bytes, Any]" = weakref.WeakValueDictionary()


@dataclass
class _Named:
    loader: Callable[[], Any]
    fingerprint: bytes | None
    instance: Any = None


_named: dict[str, _Named] = {}
_retired: dict[bytes, str] = {}


def retire(fingerprint: bytes, note: str) -> None:
    """Record that ``fingerprint`` belongs to a model this version no longer ships; ``note`` says
    what it was and where its streams still decode (it ends the error messages of its streams)."""
    with _lock:
        _retired[bytes(fingerprint)] = note


def retired(fingerprint: bytes) -> str | None:
    """The note of a retired model's fingerprint (``retire``), else None."""
    with _lock:
        return _retired.get(bytes(fingerprint))


def register(codec: Any) -> None:
    """Record a loaded codec (anything with a ``fingerprint`` bytes attribute)."""
    fp = bytes(codec.fingerprint)
    with _lock:
        _loaded[fp] = codec


def register_named(name: str, loader: Callable[[], Any], fingerprint: bytes | None = None) -> None:
    """Record a named model: ``loader()`` returns its codec; ``fingerprint`` (16 bytes) if known."""
    if not callable(loader):
        raise TypeError("loader must be a zero-argument callable returning a codec")
    with _lock:
        _named[name] = _Named(loader=loader, fingerprint=fingerprint)


_F = TypeVar("_F", bound=Callable[..., Any])


def named_model(*names: str, fingerprint: bytes | None = None) -> Callable[[_F], _F]:
    """Decorator: register the decorated loader under each of ``names``.

    The loader is called as ``loader(name)`` (with the one name asked for) and returns the codec;
    the function itself is returned unchanged::

        @registry.named_model("sodec-tiny", "sodec-tiny-checkerboard")
        def load_named(name: str, device="cpu") -> SodecCodec: ...
    """
    if not names or not all(isinstance(n, str) and n for n in names):
        raise TypeError("named_model takes one or more non-empty model names")

    def decorate(fn: _F) -> _F:
        for name in names:
            register_named(name, partial(fn, name), fingerprint=fingerprint)
        return fn

    return decorate


def unregister_named(name: str) -> None:
    """Forget a named model (no error when absent)."""
    with _lock:
        _named.pop(name, None)


def named() -> list[str]:
    """Names of the registered named models."""
    with _lock:
        return sorted(_named)


def loaded() -> list[bytes]:
    """Fingerprints of the codecs currently loaded."""
    with _lock:
        return list(_loaded.keys())


def find(fingerprint: bytes) -> Any | None:
    """The codec whose fingerprint is ``fingerprint``, loading a named model if needed; else None."""
    fp = bytes(fingerprint)
    with _lock:
        codec = _loaded.get(fp)
        if codec is not None:
            return codec
        candidates = [(n, e) for n, e in _named.items() if e.fingerprint in (None, fp)]
    # load outside the lock: loading can take seconds and may itself register
    for _, entry in sorted(candidates, key=lambda ne: ne[1].fingerprint is None):
        if entry.instance is None:
            entry.instance = entry.loader()
            entry.fingerprint = bytes(entry.instance.fingerprint)
            register(entry.instance)
        if entry.fingerprint == fp:
            return entry.instance
        # A loader may register more codecs than the one it returns: look at the loaded table again.
        with _lock:
            codec = _loaded.get(fp)
        if codec is not None:
            return codec
    return None
