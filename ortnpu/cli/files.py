"""The command line's file edges: reading array files, checking and writing output paths.

Every sub-command reads its ``.npz`` data and writes its outputs through these helpers, so a
bad file or path is one :class:`~ortnpu.errors.OrtNpuError` line (exit 2) the same way
everywhere: object arrays, truncated or empty archives, a plain ``.npy``, an output in a folder
that cannot be created, or an output path that is one of the command's own input files (which
would otherwise be overwritten, e.g. ``evaluate --json model.onnx``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ortnpu.errors import CalibrationError, ModelError, OrtNpuError, first_line

#: Element kinds an input array may have: bool, signed/unsigned integers, floats.
_NUMERIC_KINDS = "biuf"


def read_arrays(path: str | os.PathLike, what: str = "data",
                error: type[OrtNpuError] = CalibrationError) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` (or the one array of a ``.npy``, named by the file's stem).

    Arrays are read eagerly and without pickle, so a truncated archive, an object array or a
    non-numeric array is refused here, naming the file, instead of failing later.

    Raises:
        ``error``: missing/unreadable file, no arrays, or an array that is not numeric.
    """
    p = Path(path)
    if not p.exists():
        raise error(f"{p}: cannot read {what}: no such file; check the path")
    if p.is_dir():
        raise error(f"{p}: is a directory; give an .npz file with one array per model input")
    try:
        loaded = np.load(p, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            arrays = {p.stem: loaded}
        else:
            with loaded:
                arrays = {k: loaded[k] for k in loaded.files}
    except Exception as exc:  # OSError, ValueError, BadZipFile, EOFError, zlib.error, ...
        raise error(f"{p}: cannot read {what} ({first_line(exc)}); save numeric arrays with "
                    "numpy.savez(path, name=array) (no object arrays)") from None
    if not arrays:
        raise error(f"{p}: holds no arrays; save one array per model input, named like it")
    for name, arr in arrays.items():
        if arr.dtype.kind not in _NUMERIC_KINDS:
            raise error(f"{p}: array {name!r} has dtype {arr.dtype}; {what} must be numbers "
                        "(bool, integer or float)")
    return arrays


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def output_path(path: str | os.PathLike, *inputs: str | os.PathLike | None) -> Path:
    """Check an output path before the work starts; create its folder.

    Args:
        path: where the command will write.
        inputs: the files the command reads (None entries are ignored).

    Raises:
        ModelError: ``path`` is one of ``inputs`` (it would be overwritten), a directory, or its
            folder cannot be created.
    """
    out = Path(path)
    for inp in inputs:
        if inp is not None and str(inp) and _same_file(out, Path(inp)):
            raise ModelError(f"{out}: is also an input of this command; refusing to overwrite "
                             "it: give another output path")
    if out.is_dir():
        raise ModelError(f"{out}: is a directory; give a file name for the output")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelError(f"{out}: cannot create the folder {str(out.parent)!r}: "
                         f"{exc.strerror or exc}") from None
    return out


def save_model(model: object, path: str | os.PathLike) -> None:
    """Write an ONNX model to ``path`` (one line on failure)."""
    import onnx

    try:
        onnx.save(model, str(path))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot write {path}: {exc}") from None


def npz_path(path: str | os.PathLike) -> Path:
    """The file :func:`numpy.savez` really writes for ``path`` (it adds ``.npz``)."""
    out = Path(path)
    return out if out.suffix == ".npz" else out.with_name(out.name + ".npz")


def save_arrays(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> Path:
    """Write ``arrays`` as an ``.npz``; return the path written (see :func:`npz_path`)."""
    out = npz_path(path)
    try:
        np.savez(out, **dict(arrays))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot write {out}: {first_line(exc)}") from None
    return out


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text report (one line on failure)."""
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ModelError(f"cannot write {path}: {exc.strerror or exc}") from None


__all__ = ["npz_path", "output_path", "read_arrays", "save_arrays", "save_model", "write_text"]
