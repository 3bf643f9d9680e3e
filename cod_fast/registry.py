"""Registry of models by fingerprint, so that ``cod_fast.decode(data)`` can find its model.

Two kinds of entries:

* loaded codecs: every codec built by ``load_model`` (or registered with ``register``) is kept
  by weak reference under its 16-byte fingerprint; dropping the codec drops the entry;
* named models: ``register_named(name, loader, fingerprint=None)`` records how to load a model
  (a zero-argument callable returning a codec). ``find`` loads a named model only when its
  recorded fingerprint matches, or when its fingerprint is not yet known (then it is loaded once
  and its fingerprint remembered).
"""
from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from typing import Any, Callable

_lock = threading.Lock()
_loaded: "weakref.WeakValueDictionary[bytes, Any]" = weakref.WeakValueDictionary()


@dataclass
class _Named:
    loader: Callable[[], Any]
    fingerprint: bytes | None
    instance: Any = None


_named: dict[str, _Named] = {}


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
        # A loader may register more codecs than the one it returns (the default model's loader
        # registers release 1 and release 2): look at the loaded table again.
        with _lock:
            codec = _loaded.get(fp)
        if codec is not None:
            return codec
    return None


def _load_default() -> Any:
    """Loader of the bundled default model (named "default"): built on first use, on the CPU."""
    from .codecs.default import load_default_codec

    return load_default_codec()


register_named("default", _load_default)


def _load_sodec_named(name: str) -> Any:
    """Loader of the named SODEC models (fixed seeded weights, CPU)."""
    from .codecs.sodec import load_named

    return load_named(name)


register_named("sodec-tiny", lambda: _load_sodec_named("sodec-tiny"))
register_named("sodec-tiny-checkerboard", lambda: _load_sodec_named("sodec-tiny-checkerboard"))
