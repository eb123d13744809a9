"""E-steps split over CPU threads: the same result, bit for bit, and torch's settings restored."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evodenoise import denoise, inpaint
from evodenoise.parallel import MIN_ROWS, map_rows, map_slices, split_rows
from evodenoise.presets import get_preset


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_map_rows_covers_every_row_once_with_gradients_off(two_threads):
    seen = []

    def part(r):
        seen.append((r.start, r.stop, torch.is_grad_enabled()))
        return r.stop - r.start

    assert map_rows(part, 3 * MIN_ROWS) == [3 * MIN_ROWS]  # no split outside split_rows
    seen.clear()
    with split_rows(torch.device("cpu")) as n:
        assert n == 2 and torch.get_num_threads() == 1
        sizes = map_rows(part, 3 * MIN_ROWS + 1)
        assert map_rows(part, 2 * MIN_ROWS - 1) == [2 * MIN_ROWS - 1]  # too few rows: one part
    assert torch.get_num_threads() == 2
    assert sum(sizes) == 3 * MIN_ROWS + 1 and len(sizes) == 2
    spans = sorted(s[:2] for s in seen[:2])
    assert spans[0][0] == 0 and spans[0][1] == spans[1][0] and spans[1][1] == 3 * MIN_ROWS + 1
    assert not any(s[2] for s in seen[:2])


def test_map_slices_cuts_the_same_slices_on_any_thread_count(two_threads):
    def part(r):
        return (r.start, r.stop, torch.is_grad_enabled(), map_rows(lambda q: q, 4 * MIN_ROWS))

    alone = map_slices(part, 10, 4)
    with split_rows(torch.device("cpu")):
        split = map_slices(part, 10, 4)
    whole = [slice(0, 4 * MIN_ROWS)]  # a part's own map_rows does not split again
    assert alone == split == [(0, 4, False, whole), (4, 8, False, whole), (8, 10, False, whole)]
    assert map_slices(part, 0, 4) == []


def test_split_rows_is_off_on_one_thread_or_when_disabled(two_threads):
    with split_rows(torch.device("cpu"), enabled=False) as n:
        assert n == 1 and torch.get_num_threads() == 2
    torch.set_num_threads(1)
    with split_rows(torch.device("cpu")) as n:
        assert n == 1


def test_split_rows_restores_threads_after_an_error(two_threads):
    with pytest.raises(RuntimeError), split_rows(torch.device("cpu")):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize("task", ["denoise-gray", "denoise-colour", "inpaint"])
def test_two_threads_give_the_one_thread_result_bit_for_bit(task):
    rng = np.random.default_rng(0)
    shape = (40, 40, 3) if task == "denoise-colour" else (40, 40)
    clean = rng.random(shape).astype(np.float32) * 0.5 + 0.25
    noisy = np.clip(clean + rng.normal(0, 0.1, shape), 0, 1).astype(np.float32)
    preset = "inpaint" if task == "inpaint" else "fast"
    # E-batches of 256 rows (two parts of 128); the estimate in groups of 16 chunks of 16
    # patches, 6 groups of the 1,369 patches side by side (trained, fresh and poorly fitted)
    cfg = get_preset(preset).replace(
        epochs=2, min_visits=0, patch_size=4, train_patches=600, chunk_size=16
    )
    mask = rng.random(shape) < 0.3 if task == "inpaint" else None
    before = torch.get_num_threads()
    outs = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            if task == "inpaint":
                out, _ = inpaint(noisy, mask, config=cfg, seed=3)
            else:
                out, _ = denoise(noisy, 0.1, config=cfg, seed=3)
            assert torch.get_num_threads() == threads
            outs.append(out)
    finally:
        torch.set_num_threads(before)
    np.testing.assert_array_equal(outs[0], outs[1])
