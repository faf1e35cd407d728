"""Without PyTorch, ``ortnpu.from_torch`` says which extra to install (runs where torch is absent
too, unlike tests/test_from_torch.py)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import ortnpu


def test_missing_torch_is_a_clear_unsupported_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)   # import torch now raises ImportError
    with pytest.raises(ortnpu.UnsupportedError, match=r"ortnpu\[torch\]"):
        ortnpu.from_torch(object(), np.zeros((1, 3), np.float32))
