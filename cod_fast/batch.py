"""Many streams at once: ``decode_many`` / ``encode_many`` (ordered iterators with per-item errors)
and ``StreamDataset`` (a ``torch.utils.data.Dataset`` over stream files, decoding in workers).

``decode_many`` works chunk by chunk (``batch_size`` streams):

1. *prepare* (``workers`` threads of one torch thread each, side by side): read each stream, find
   its model, parse it and, for the default model, run the entropy half of ``decode``
   (``DefaultCodec.decode_latents``: rANS z and y in C++, which releases the GIL, and the fixed-point
   entropy parameters of release 2 and later, whose integers do not depend on the thread count);
2. *synthesise*: the second half of ``decode`` (``DefaultCodec.synthesize``) image by image,
   at the caller's torch thread count T, so the pixels are **bitwise** those of ``decode`` (the
   CPU convolutions round differently at other thread counts or batch shapes, so the synthesis
   is never batched or re-threaded by default). With spare CPUs (``synthesis_threads``, default
   CPUs // T: 2 for a one-thread caller on 2 cores) several images are synthesised side by side,
   each at T threads on its own copy of the synthesis network. The next chunk is prepared while
   the consumer handles this one.

Where the time goes (BENCHMARKS.md, "decode_many"): at T = 2 on 2 cores ``decode`` spends ~27 ms
of a ~178 ms Kodak decode in the entropy half, which barely uses the second core, while the
synthesis keeps both busy; running the entropy halves of a chunk two at a time reclaims that
core, and that is all there is to reclaim on 2 cores without changing the pixels (~1.06x). At
T = 1, the side-by-side syntheses use the other core.

``forward_batch`` trades exactness for batched synthesis forwards (the default on CUDA; on the
CPU in a channels-last copy of the synthesis, pixels within 1 level of ``decode``'s). Other codecs
(SODEC, CoD, DiffC), default-model streams with float entropy parameters (release 1, or a model
loaded without integer files: they depend on the thread count) and calls with decode ``overrides`` are decoded stream by stream by ``decode`` in the
calling thread.
"""
from __future__ import annotations

import contextlib
import copy
import os
import pickle
import sys
import threading
import weakref
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import memory, portable
from .api import codec_for_stream, find_model, resolve_model
from .bitstream import MAX_CONTAINER_BYTES, CodecId, read_header
from .errors import BitstreamError
from .image_io import to_uint8_chw
from .references import load_model

__all__ = ["DecodeResult", "EncodeResult", "StreamDataset", "decode_many", "encode_many"]

StreamLike = bytes | bytearray | memoryview | str | os.PathLike
ON_ERROR = ("report", "raise")


@dataclass
class DecodeResult:
    """One item of ``decode_many``: ``image`` (uint8 [3, H, W], CPU) or ``error`` (the exception).

    ``index``: position in the input; ``name``: the file path for path inputs, else None."""

    index: int
    image: torch.Tensor | None = None
    error: BaseException | None = None
    name: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class EncodeResult:
    """One item of ``encode_many``: ``data`` (container bytes) or ``error``."""

    index: int
    data: bytes | None = None
    error: BaseException | None = None
    name: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------

def _read(stream: StreamLike) -> tuple[bytes, str | None]:
    if isinstance(stream, (bytes, bytearray, memoryview)):
        return bytes(stream), None
    if isinstance(stream, (str, os.PathLike)):

        p = Path(stream)
        size = p.stat().st_size
        if size > MAX_CONTAINER_BYTES:
            raise BitstreamError(f"{p} is {size} bytes, larger than any valid stream")
        return p.read_bytes(), str(p)
    raise TypeError(f"a stream must be bytes or a file path, got {type(stream).__name__}")


def _on_device(codec: Any, device: torch.device | None) -> Any:
    """``codec`` on ``device``: itself when it lives there, else rebuilt there from its reference
    with its settings (the pickling path, ``cod_fast.portable``; NotPortableError for weights that
    exist only in memory)."""
    if device is None or torch.device(codec.device) == device:
        return codec
    with portable.receive_on(device):
        return pickle.loads(pickle.dumps(codec))


class _Models:
    """Stream -> codec: the given model, or the registry by fingerprint; moved to ``device``."""

    def __init__(self, model: Any, device: torch.device | None) -> None:

        self.fixed = _on_device(resolve_model(model), device) if model is not None else None
        self.device = device
        self._lock = threading.Lock()
        self._by_fp: dict[bytes, Any] = {}

    def codec_for(self, data: bytes) -> Any:
        """The codec of ``data`` (``api.codec_for_stream``), each model moved to ``device`` once."""
        if self.fixed is not None:
            return codec_for_stream(data, self.fixed)
        fp = read_header(data).fingerprint
        with self._lock:
            codec = self._by_fp.get(fp)
        if codec is None:
            codec = _on_device(find_model(fp), self.device)
            with self._lock:
                codec = self._by_fp.setdefault(fp, codec)
        return codec_for_stream(data, codec)


@dataclass
class _Prepared:
    index: int
    name: str | None
    data: bytes | None = None
    codec: Any = None
    error: BaseException | None = None
    # default model only: what the synthesis needs
    y_hat: torch.Tensor | None = None  # float32 (1, M, h, w), CPU
    quality: float = 0.0
    size: tuple[int, int] = (0, 0)
    image: torch.Tensor | None = None


_cl_synthesis: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_cl_lock = threading.Lock()


def _cpu_synthesis(net: torch.nn.Module) -> torch.nn.Module:
    """A channels-last copy of ``net.g_s`` (CPU float32), made once per network."""
    with _cl_lock:
        g = _cl_synthesis.get(net)
        if g is None:
            g = copy.deepcopy(net.g_s).to(memory_format=torch.channels_last).eval()
            _cl_synthesis[net] = g
    return g


def _prepare(index: int, stream: StreamLike, models: _Models, split: bool = True) -> _Prepared:
    """Read, find the codec and (``split``: the default model's fixed-point streams, release 2 and later) run the entropy
    half of ``decode`` on one stream (any thread, any torch thread count: same integers)."""
    item = _Prepared(index=index, name=str(stream) if isinstance(stream, (str, os.PathLike)) else None)
    try:
        item.data, item.name = _read(stream)
        item.codec = models.codec_for(item.data)
        if split and _is_default(item.codec) and not item.codec.entropy_depends_on_threads:
            item.y_hat, item.quality, item.size = item.codec.decode_latents(item.data)
    except Exception as exc:  # noqa: BLE001 -- reported per item
        item.error = exc
    return item


def _is_default(codec: Any) -> bool:
    """Whether ``codec`` is the default model's codec (by codec id: its streams take the split
    entropy/synthesis pipeline below)."""
    return getattr(codec, "codec_id", None) == CodecId.DEFAULT_HYPERPRIOR


def _default_synthesis(codec: Any, items: list[_Prepared], forward_batch: int) -> None:
    """Synthesise prepared default-model items (same padded size) in forwards of ``forward_batch``;
    sets ``image`` or ``error`` on each."""
    net = codec.net
    dev = next(net.parameters()).device
    dtype = next(net.g_s.parameters()).dtype
    g_s = _cpu_synthesis(net) if dev.type == "cpu" and dtype == torch.float32 else net.g_s
    for start in range(0, len(items), forward_batch):
        part = items[start:start + forward_batch]
        try:
            # the channels-last copy is private to decode_many (stateless forward): no codec lock,
            # so that parallel synthesis threads do not serialise
            lock = codec._lock if g_s is net.g_s else contextlib.nullcontext()
            with torch.inference_mode(), lock:
                q = torch.tensor([it.quality for it in part], dtype=torch.float32, device=dev)
                y = torch.cat([it.y_hat for it in part]).to(dev)
                gain = net._gain(net.log_inv_gain, q)
                inp = (y * gain).to(dtype)
                if g_s is not net.g_s:
                    inp = inp.contiguous(memory_format=torch.channels_last)
                x = g_s(inp, q).clamp_(0.0, 1.0)
            for k, it in enumerate(part):
                h, w = it.size
                img = (x[k, :, :h, :w].float() * 255.0).round_().clamp_(0, 255).to(torch.uint8)
                it.image, it.y_hat = img.to("cpu").contiguous(), None
        except Exception as exc:  # noqa: BLE001 -- reported per item
            for it in part:
                it.error = exc


#: Private copies of synthesis networks for side-by-side syntheses: g_s -> (weights signature,
#: free copies). A copy is taken for one synthesis and given back; a new one is made when none is
#: free, so concurrent decode_many calls never share one.
_replicas: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_replicas_lock = threading.Lock()


def _weights_signature(net: torch.nn.Module) -> tuple | None:
    """Identity and version of every parameter and buffer (None: not trackable, do not cache)."""
    try:
        return tuple((t.data_ptr(), t._version) for t in (*net.parameters(), *net.buffers()))
    except RuntimeError:  # inference tensors have no version counter
        return None


def _take_replica(g_s: torch.nn.Module) -> tuple[torch.nn.Module, Any]:
    """(a private ``copy.deepcopy`` of ``g_s``, its free list or None): copies are kept while the
    weights of ``g_s`` are unchanged (same storages and versions)."""
    sig = _weights_signature(g_s)
    free: deque | None = None
    if sig is not None:
        with _replicas_lock:
            entry = _replicas.get(g_s)
            if entry is None or entry[0] != sig:
                entry = (sig, deque())
                _replicas[g_s] = entry
            free = entry[1]
            if free:
                return free.pop(), free
    return copy.deepcopy(g_s).eval(), free


def _give_replica(replica: torch.nn.Module, free: deque | None) -> None:
    if free is not None:
        with _replicas_lock:
            free.append(replica)


def _synthesize_exact(it: _Prepared, replica: bool) -> None:
    """``decode``'s synthesis half for one prepared default-model item (sets ``image`` or ``error``);
    ``replica``: on a private copy of the synthesis (side-by-side threads), else on the codec's own."""
    taken = _take_replica(it.codec.net.g_s) if replica else (None, None)
    try:
        it.image = it.codec.synthesize(it.y_hat, it.quality, it.size, g_s=taken[0])
    except Exception as exc:  # noqa: BLE001 -- reported per item
        it.error = exc
    finally:
        it.y_hat = None
        if taken[0] is not None:
            _give_replica(*taken)


def _parallel_syntheses(items: list[_Prepared], limit: int) -> int:
    """How many of ``items`` to synthesise side by side: at most ``limit`` and as many as the
    memory budget holds (``cod_fast.memory``: each synthesis needs its decode estimate)."""
    if limit <= 1 or len(items) <= 1:
        return 1
    need = max(memory.estimate(it.codec, "decode", *it.size) for it in items)
    return max(1, min(limit, len(items), memory.default_budget("cpu") // max(1, need)))


def _exact(codec: Any, forward_batch: int | None) -> bool:
    """Whether the default-model items of ``codec`` take the exact path (``decode``'s synthesis
    half per image, ``DefaultCodec.synthesize``): a CPU codec without ``forward_batch``."""
    return torch.device(codec.device).type == "cpu" and forward_batch is None


def _finish(chunk: list[_Prepared], forward_batch: int | None, overrides: dict[str, Any],
            synthesis_pool: ThreadPoolExecutor | None = None, synthesis_threads: int = 1) -> list[DecodeResult]:
    """The synthesis of a prepared chunk -> its results, in order. Exact items (``_exact``) run
    ``decode``'s synthesis half: in the calling thread, or up to ``synthesis_threads`` side by
    side in ``synthesis_pool`` (threads at the caller's torch thread count, one private synthesis
    copy each)."""
    exact: list[_Prepared] = []
    groups: dict[tuple, list[_Prepared]] = {}
    for it in chunk:
        if it.error is None and it.y_hat is not None:
            if _exact(it.codec, forward_batch):
                exact.append(it)
            else:
                pad = tuple(-(-s // it.codec.stride) for s in it.size)
                groups.setdefault((id(it.codec), pad), []).append(it)
    n = _parallel_syntheses(exact, synthesis_threads if synthesis_pool is not None else 1)
    if n > 1:
        sem = threading.BoundedSemaphore(n)  # n <= the pool's threads: the memory budget's share

        def run(it: _Prepared) -> None:
            with sem:
                _synthesize_exact(it, replica=True)

        list(synthesis_pool.map(run, exact))
    else:
        for it in exact:
            _synthesize_exact(it, replica=False)
    for items in groups.values():
        codec = items[0].codec
        fb = max(1, int(forward_batch or (len(items) if torch.device(codec.device).type == "cuda" else 1)))
        for i in range(0, len(items), fb):
            _default_synthesis(codec, items[i:i + fb], fb)
    out = []
    for it in chunk:
        res = DecodeResult(index=it.index, name=it.name, error=it.error)
        if it.error is None:
            if it.image is not None:
                res.image = it.image
            else:  # not split: other codecs, float-entropy default streams, decode overrides
                try:
                    res.image = it.codec.decode(it.data, **overrides)
                except Exception as exc:  # noqa: BLE001 -- reported per item
                    res.error = exc
        out.append(res)
    return out


def _progress_bar(total: int | None, desc: str, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm  # local: import time (only with progress=True)

    return tqdm(total=total, desc=desc, unit="img", file=sys.stderr)


def _deliver(res: Any, bar: Any, on_error: str) -> Any:
    """One finished item: counted on the progress bar, raised with ``on_error="raise"``, else returned."""
    if bar is not None:
        bar.update(1)
    if res.error is not None and on_error == "raise":
        raise res.error
    return res


def _check_common(batch_size: int, workers: int, on_error: str) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if not isinstance(workers, int) or workers < 0:
        raise ValueError(f"workers must be an int >= 0, got {workers!r}")
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")


# ----------------------------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------------------------

def decode_many(streams: Iterable[StreamLike], model: Any = None, *, batch_size: int = 8,
                device: str | torch.device | None = None, workers: int | None = None, progress: bool = False,
                on_error: str = "report", forward_batch: int | None = None, synthesis_threads: int | None = None,
                **overrides: Any) -> Iterator[DecodeResult]:
    """Decode many streams; yields one :class:`DecodeResult` per input, in input order.

    On the CPU the default model's images are bitwise those of ``cod_fast.decode`` at the caller's
    torch thread count (module docstring); ``forward_batch`` trades that for batched forwards.

    Args:
        streams: container bytes or stream file paths (any iterable; consumed lazily, at most
            ``2 * batch_size`` items ahead).
        model: a codec, or what ``cod_fast.decode`` accepts; None: each stream's model is found
            by its fingerprint (``cod_fast.registry``), as ``cod_fast.decode`` does.
        batch_size: streams per chunk (prepared together, then synthesised; with
            ``forward_batch`` or on CUDA, same model and padded size share synthesis forwards).
        device: decode on this device (codecs elsewhere are rebuilt there from their reference);
            None: where each codec lives.
        workers: threads of one torch thread each that read, parse and entropy-decode the streams
            of a chunk side by side (None: ``torch.get_num_threads()``; 0: in the calling thread).
        progress: a tqdm progress bar on stderr.
        on_error: "report" (the item carries ``.error``, the others go on) or "raise" (raise
            the item's exception when its turn comes).
        forward_batch: images per synthesis forward of the default model (None: ``batch_size``
            on CUDA; on the CPU the exact per-image synthesis of ``decode``). An int runs batched
            forwards (pixels within 1 level of ``decode``'s on the CPU).
        synthesis_threads: CPU syntheses run side by side, each at the caller's torch thread count
            on its own copy of the synthesis network (same pixels as ``decode``); None: as many as
            the CPUs hold (``os.sched_getaffinity`` // ``torch.get_num_threads()``, e.g. 2 for a
            one-thread caller on 2 cores, 1 for a 2-thread caller); fewer when the memory budget
            (``cod_fast.memory``) does not hold that many at once.
        overrides: decode settings passed to every codec's ``decode`` (e.g. ``steps``); with
            overrides the default model's streams are decoded one by one by ``decode``.

    Returns: an iterator of DecodeResult (``image``: uint8 [3, H, W] on the CPU, or ``error``).
    """
    if workers is None:
        workers = torch.get_num_threads()
    _check_common(batch_size, workers, on_error)
    if forward_batch is not None and (not isinstance(forward_batch, int) or forward_batch < 1):
        raise ValueError(f"forward_batch must be a positive int or None, got {forward_batch!r}")
    if synthesis_threads is None:
        synthesis_threads = max(1, _cpu_count() // torch.get_num_threads())
    if not isinstance(synthesis_threads, int) or synthesis_threads < 1:
        raise ValueError(f"synthesis_threads must be a positive int or None, got {synthesis_threads!r}")
    dev = torch.device(device) if device is not None else None
    models = _Models(model, dev)
    return _decode_iter(streams, models, batch_size, workers, progress, on_error, forward_batch, overrides,
                        synthesis_threads)


#: Prepare the next chunk while this one is synthesised (True) or after (False, the default:
#: the entropy threads would take cores from the synthesis' multi-thread convolutions).
_PREPARE_DURING_SYNTHESIS = False


def _cpu_count() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _decode_iter(streams: Iterable[StreamLike], models: _Models, batch_size: int, workers: int, progress: bool,
                 on_error: str, forward_batch: int | None, overrides: dict[str, Any],
                 synthesis_threads: int = 1) -> Iterator[DecodeResult]:
    total = len(streams) if hasattr(streams, "__len__") else None  # type: ignore[arg-type]
    bar = _progress_bar(total, "decode", progress)
    source = enumerate(streams)
    caller_threads = torch.get_num_threads()
    # one torch thread per worker: the workers run side by side; the integers they compute do
    # not depend on the thread count (streams whose entropy stage does are not split: _prepare)
    pool = (ThreadPoolExecutor(max_workers=workers, initializer=torch.set_num_threads, initargs=(1,))
            if workers > 0 else None)
    # side-by-side syntheses at the caller's thread count: the pixels of decode
    synth = (ThreadPoolExecutor(max_workers=synthesis_threads, initializer=torch.set_num_threads,
                                initargs=(caller_threads,)) if synthesis_threads > 1 else None)
    pending: deque[Future | _Prepared] = deque()

    def feed(n: int) -> None:
        for _ in range(n):
            try:
                i, s = next(source)
            except StopIteration:
                return
            pending.append(pool.submit(_prepare, i, s, models, not overrides) if pool
                           else _prepare(i, s, models, not overrides))

    try:
        feed(batch_size)
        while pending:
            chunk = []
            while pending and len(chunk) < batch_size:
                p = pending.popleft()
                chunk.append(p.result() if isinstance(p, Future) else p)
            if _PREPARE_DURING_SYNTHESIS:
                feed(len(chunk))
            results = _finish(chunk, forward_batch, overrides, synth, synthesis_threads)
            if not _PREPARE_DURING_SYNTHESIS:
                feed(len(chunk))  # prepared while the consumer handles this chunk
            for res in results:
                yield _deliver(res, bar, on_error)
    finally:
        for p in (pool, synth):
            if p is not None:
                p.shutdown(wait=True, cancel_futures=True)
        if pool is not None or synth is not None:
            # torch.set_num_threads in a worker also sets the count that threads started later
            # begin with (and the pthreadpool's): put back the caller's
            torch.set_num_threads(caller_threads)
        if bar is not None:
            bar.close()


def encode_many(images: Iterable[Any], model: Any = None, *, workers: int = 1, progress: bool = False,
                on_error: str = "report", **params: Any) -> Iterator[EncodeResult]:
    """Encode many images with one model; yields one :class:`EncodeResult` per input, in order.

    ``images``: anything ``encode`` takes (paths, PIL images, arrays, uint8/float tensors);
    ``model``: a codec or what ``cod_fast.encode`` accepts (None: the bundled default model);
    ``workers``: threads that read and convert images ahead; ``params``: the codec's encode
    parameters (e.g. ``quality`` for the default model, ``steps`` for CoD). Errors as
    ``decode_many`` (``on_error``).
    """
    _check_common(1, workers, on_error)

    codec = resolve_model(model) if model is not None else load_model()
    return _encode_iter(images, codec, workers, progress, on_error, params)


def _load_image(index: int, image: Any) -> tuple[int, Any, str | None, BaseException | None]:

    name = str(image) if isinstance(image, (str, os.PathLike)) else None
    try:
        return index, to_uint8_chw(image), name, None
    except Exception as exc:  # noqa: BLE001 -- reported per item
        return index, None, name, exc


def _encode_iter(images: Iterable[Any], codec: Any, workers: int, progress: bool, on_error: str,
                 params: dict[str, Any]) -> Iterator[EncodeResult]:
    total = len(images) if hasattr(images, "__len__") else None  # type: ignore[arg-type]
    bar = _progress_bar(total, "encode", progress)
    pool = ThreadPoolExecutor(max_workers=workers) if workers > 0 else None
    pending: deque = deque()
    source = enumerate(images)

    def feed(n: int) -> None:
        for _ in range(n):
            try:
                i, im = next(source)
            except StopIteration:
                return
            pending.append(pool.submit(_load_image, i, im) if pool else _load_image(i, im))

    try:
        feed(2 * max(workers, 1))
        while pending:
            p = pending.popleft()
            index, img, name, err = p.result() if isinstance(p, Future) else p
            feed(1)
            res = EncodeResult(index=index, name=name, error=err)
            if err is None:
                try:
                    res.data = codec.encode(img, **params)
                except Exception as exc:  # noqa: BLE001 -- reported per item
                    res.error = exc
            yield _deliver(res, bar, on_error)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        if bar is not None:
            bar.close()


class StreamDataset(torch.utils.data.Dataset):
    """A map-style Dataset over stream files (or a folder of ``.codf`` files): item ``i`` is the
    decoded image of file ``i``, uint8 [3, H, W] (after ``transform`` when given).

    ``model``: a codec (it pickles by reference, so DataLoader workers started with "spawn" rebuild
    it once each), a preset name or path, or None (each stream's model by fingerprint, e.g. the
    bundled default model). ``threads``: torch threads in the decoding process (default: this
    process's count when the dataset is made; DataLoader workers otherwise run at 1: any count reads
    current streams, while float-entropy default-model streams (release 1) decode only at their encoder's count,
    see ``EntropyParameterMismatchError``). Decoding errors are raised with the file name.
    """

    def __init__(self, files: str | os.PathLike | Iterable[str | os.PathLike], model: Any = None, *,
                 device: str | torch.device = "cpu", threads: int | None = None,
                 transform: Any = None, suffixes: tuple[str, ...] = (".codf",)) -> None:
        if isinstance(files, (str, os.PathLike)) and Path(files).is_dir():
            self.files = sorted(str(p) for p in Path(files).iterdir() if p.suffix.lower() in suffixes)
        elif isinstance(files, (str, os.PathLike)):
            self.files = [str(files)]
        else:
            self.files = [str(f) for f in files]
        self.model = model
        self.device = str(torch.device(device))
        self.threads = int(threads) if threads is not None else torch.get_num_threads()
        self.transform = transform
        self._models: _Models | None = None

    def __len__(self) -> int:
        return len(self.files)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_models"] = None  # rebuilt in the worker
        return state

    def __getitem__(self, i: int) -> Any:
        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        if self._models is None:
            self._models = _Models(self.model, torch.device(self.device))
        f = self.files[i]
        try:
            data, _ = _read(f)
            img = self._models.codec_for(data).decode(data)
        except Exception as exc:
            exc.add_note(f"while decoding {f}")
            raise
        return self.transform(img) if self.transform is not None else img
