"""fastres.batch_shapes: the batch sizes `fastres serve` and `fastres bench mlperf` capture, and
the padding of a batch to one of them."""
from __future__ import annotations

import pytest

from fastres.batch_shapes import MAX_BATCH_LIMIT, batch_sizes, padded_size


def test_batch_sizes_and_padding():
    assert batch_sizes(1) == (1,) and batch_sizes(8) == (1, 2, 4, 8) and batch_sizes(12) == (1, 2, 4, 8, 12)
    assert batch_sizes(MAX_BATCH_LIMIT)[-2:] == (512, 1024)
    assert [padded_size(n, batch_sizes(12)) for n in (1, 2, 3, 5, 9, 12)] == [1, 2, 4, 8, 12, 12]
    for bad in (0, MAX_BATCH_LIMIT + 1):
        with pytest.raises(ValueError, match=f"max_batch must be between 1 and 1024, got {bad}"):
            batch_sizes(bad)
