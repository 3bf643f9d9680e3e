"""Ray Data: decode a folder of streams on a local Ray cluster (2 CPUs), one codec per actor, and
compare byte for byte with single-process decoding. Skipped when ray (with ray.data) is missing:
install the extra, ``pip install .[ray]``."""
from __future__ import annotations

import pytest
import torch
from batch_helpers import make_image

ray = pytest.importorskip("ray", reason="ray is not installed (pip install cod_fast[ray])")
pytest.importorskip("ray.data", reason="ray.data is not importable (needs pyarrow; pip install cod_fast[ray])")


@pytest.fixture(autouse=True)
def _time_bound():
    """Fail instead of hanging (e.g. actors waiting for CPUs the cluster does not have): 240 s."""
    import signal

    def expired(signum, frame):
        raise TimeoutError("the Ray test ran past 240 s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(240)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


@pytest.mark.slow
def test_decode_folder_matches_single_process(cluster, default_codec, one_step_codec, tmp_path) -> None:
    from cod_fast.integrations.ray_data import decode_folder

    default_dir, one_dir = tmp_path / "default", tmp_path / "one_step"
    default_dir.mkdir()
    one_dir.mkdir()
    expected = {}
    for i in range(3):
        f = default_dir / f"{i}.codf"
        f.write_bytes(default_codec.encode(make_image(40 + 8 * i, 52, seed=i), quality=float(i)))
        expected[str(f)] = default_codec.decode(f.read_bytes()).permute(1, 2, 0).numpy().tobytes()
        g = one_dir / f"{i}.codf"
        g.write_bytes(one_step_codec.encode(make_image(32, 40 + 8 * i, seed=i)))
        expected[str(g)] = one_step_codec.decode(g.read_bytes()).permute(1, 2, 0).numpy().tobytes()
    (default_dir / "bad.codf").write_bytes(b"not a stream")
    # the default model found by fingerprint in each actor; the one-step codec travels by reference
    n = torch.get_num_threads()
    rows = decode_folder(default_dir, concurrency=2, batch_size=2, num_cpus=0.5, threads=n).take_all()
    rows += decode_folder(one_dir, one_step_codec, concurrency=1, num_cpus=0.5, threads=n).take_all()
    by_path = {r["path"]: r for r in rows}
    assert len(by_path) == 7
    assert by_path.pop(str(default_dir / "bad.codf"))["error"].startswith("BitstreamError")
    for path, row in by_path.items():
        assert row["error"] == "", row["error"]
        assert row["image"].tobytes() == expected[path], path
