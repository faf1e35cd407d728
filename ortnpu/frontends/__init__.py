"""Front ends: models from training frameworks straight into ortnpu's pipeline.

Each front end imports its framework lazily, so ortnpu never needs it installed; a missing
framework raises :class:`~ortnpu.errors.UnsupportedError` that says which extra to install.
"""

from __future__ import annotations

from ortnpu.frontends.torch_export import DEFAULT_OPSET, from_torch

__all__ = ["DEFAULT_OPSET", "from_torch"]
