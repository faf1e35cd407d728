"""The command line's file edges: reading array files, checking and writing output paths.

Every sub-command reads its ``.npz`` data and writes its outputs through these helpers, so a
bad file or path is one :class:`~ortnpu.errors.OrtNpuError` line (exit 2) the same way
everywhere: object arrays, truncated or empty archives, a plain ``.npy``, an output in a folder
that cannot be created, or an output path that is one of the command's own input files (which
would otherwise be overwritten, e.g. ``evaluate --json model.onnx``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ortnpu.errors import CalibrationError, ModelError, OrtNpuError, first_line

#: Element kinds an input array may have: bool, signed/unsigned integers, floats.
_NUMERIC_KINDS = "biuf"


class ArrayFile(Mapping[str, np.ndarray]):
    """The arrays of an ``.npz`` (or the one array of a ``.npy``, named by the file's stem).

    Every member's header (name, dtype, shape) is checked when the file is opened, so a
    truncated or empty archive, an object array (never unpickled) or a non-numeric array is
    refused at once, naming the file; the data of an array is read only when it is asked for
    (an archive may hold large arrays a command does not use).
    """

    def __init__(self, path: str | os.PathLike, what: str = "data",
                 error: type[OrtNpuError] = CalibrationError) -> None:
        self.path, self.what, self._error = Path(path), what, error
        p = self.path
        if not p.exists():
            raise error(f"{p}: cannot read {what}: no such file; check the path")
        if p.is_dir():
            raise error(f"{p}: is a directory; give an .npz file with one array per model "
                        "input")
        try:
            self._headers = self._read_headers()
        except OrtNpuError:
            raise
        except Exception as exc:  # OSError, ValueError, BadZipFile, EOFError, ...
            raise self._unreadable(exc) from None
        if not self._headers:
            raise error(f"{p}: holds no arrays; save one array per model input, named like it")
        for name, dtype in self._headers.items():
            if dtype.kind not in _NUMERIC_KINDS:
                raise error(f"{p}: array {name!r} has dtype {dtype}; {what} must be numbers "
                            "(bool, integer or float)")

    def _unreadable(self, exc: BaseException) -> OrtNpuError:
        return self._error(f"{self.path}: cannot read {self.what} ({first_line(exc)}); save "
                           "numeric arrays with numpy.savez(path, name=array) (no object "
                           "arrays)")

    def _read_headers(self) -> dict[str, np.dtype]:
        """``{name: dtype}`` from the ``.npy`` headers, without reading any data."""
        import zipfile

        if not zipfile.is_zipfile(self.path):
            with open(self.path, "rb") as f:
                return {self.path.stem: _npy_dtype(f)}
        headers: dict[str, np.dtype] = {}
        with zipfile.ZipFile(self.path) as zf:
            for member in zf.namelist():
                if not member.endswith(".npy"):
                    raise self._error(f"{self.path}: member {member!r} is not a numpy array; "
                                      "save the file with numpy.savez")
                with zf.open(member) as f:
                    headers[member[:-4]] = _npy_dtype(f)
        return headers

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self._headers:
            raise KeyError(key)
        try:
            loaded = np.load(self.path, allow_pickle=False)
            if isinstance(loaded, np.ndarray):
                return loaded
            with loaded:
                return loaded[key]
        except Exception as exc:  # truncated data, a corrupt member
            raise self._unreadable(exc) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._headers)

    def __len__(self) -> int:
        return len(self._headers)


def _npy_dtype(f: BinaryIO) -> np.dtype:
    """The dtype in an ``.npy`` header (raises ValueError on a malformed one)."""
    fmt = np.lib.format
    version = fmt.read_magic(f)
    if version == (1, 0):
        _, _, dtype = fmt.read_array_header_1_0(f)
    else:
        _, _, dtype = fmt.read_array_header_2_0(f)
    return np.dtype(dtype)


def read_arrays(path: str | os.PathLike, what: str = "data",
                error: type[OrtNpuError] = CalibrationError) -> ArrayFile:
    """Open an ``.npz``/``.npy`` data file as an :class:`ArrayFile` (checked, read lazily).

    Raises:
        ``error``: missing/unreadable file, no arrays, or an array that is not numeric.
    """
    return ArrayFile(path, what, error)


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


__all__ = ["ArrayFile", "npz_path", "output_path", "read_arrays", "save_arrays", "save_model",
           "write_text"]
