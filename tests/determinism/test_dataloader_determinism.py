"""Streams of SODEC, DiffC and one-step CoD decode in ``DataLoader(num_workers=2)`` workers (one
torch thread each) to the main process' integers, and to its pixels within the golden tolerance
(the synthesis is float; issue 13 item 3)."""
from __future__ import annotations

import sys
from pathlib import Path

import det_codecs as D
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
from make_golden import pixels_within_tolerance  # noqa: E402

NAMES = ("sodec-tiny-checkerboard", "diffc-cond", "cod-one-step")


class _Streams(torch.utils.data.Dataset):
    """Item i: (decoded integers, pixels, torch threads) of stream i, decoded where it is read."""

    def __init__(self, items: list[tuple[str, object, bytes]]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[bytes, torch.Tensor, int]:
        name, codec, data = self.items[i]
        return D.decoded_integers(name, codec, data), codec.decode(data), torch.get_num_threads()


def test_dataloader_workers_decode_as_the_main_process() -> None:
    items = []
    for name in NAMES:
        codec = D.build(name)
        with D.torch_threads(2):
            items.append((name, codec, D.encode(name, codec, D.image(32, 64, 6))))
    with D.torch_threads(2):
        want = [_Streams(items)[i] for i in range(len(items))]
    loader = torch.utils.data.DataLoader(_Streams(items), batch_size=None, num_workers=2)
    got = list(loader)
    assert len(got) == len(NAMES)
    for name, (ints, pixels, threads), (w_ints, w_pixels, _) in zip(NAMES, got, want):
        assert threads == 1, name
        assert ints == w_ints, name
        assert pixels_within_tolerance(pixels, w_pixels), name
