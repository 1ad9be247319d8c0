"""Shared fixtures for the loss tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture
def single_thread() -> Iterator[None]:
    """Run a small training loop on one intra-op thread, then restore the setting.

    The tensors in these loops are tiny, so thread fan-out costs far more than
    it saves, and on a busy shared CPU it turns a 0.2 s loop into tens of seconds.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
