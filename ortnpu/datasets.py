"""Labelled datasets for :func:`ortnpu.evaluate_accuracy`, cut into numbered batches.

A dataset is cut once, in the process that starts the evaluation, into **tasks**: small
picklable descriptions of one batch each (a list of image files, a slice of an ``.npz`` shard).
Whoever runs a task (this process, a worker process, a Ray actor on another machine) turns it
into arrays with :meth:`load`, so images are decoded where they are evaluated and the batches
are the same whatever runs them: results do not depend on the number of workers.

* :class:`ImageFolder`: one sub-folder per class (``root/<class>/<image>``), classes numbered in
  sorted name order (the torchvision convention, so ImageNet's ``n01440764``... folders get the
  usual indices). Images are resized (shorter side to ``size / crop``), centre-cropped to the
  model input's height and width, scaled to [0, 1], normalised with ``mean``/``std`` and laid
  out as the input wants (NCHW or NHWC, 1 or 3 channels). Needs Pillow (``ortnpu[images]``).
* :class:`NpzShards`: ``.npz`` files with one array per model input (for a single-input model
  any one array: ``key``, else ``test_x``, else the first) and an optional label array;
  each input is cut along its own sample axis (:mod:`ortnpu.feeds`).
* :class:`Samples`: any Python iterable of ``(inputs, label)`` pairs. ``inputs`` is an array
  (single-input model) or ``{input: array}``; a scalar label (or None) makes the pair one
  sample, stacked with the next ones along a new axis 0; a 1-D label array makes it a whole
  batch already. Its tasks carry the arrays themselves.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ortnpu.errors import CalibrationError
from ortnpu.feeds import InputSpec, sample_batches

#: file extensions ImageFolder reads
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm",
                    ".pgm")
#: label arrays NpzShards looks for, in order, when none is named
LABEL_KEYS = ("labels", "label", "y", "test_y")

Batch = tuple[dict[str, np.ndarray], "np.ndarray | None"]


@dataclass(frozen=True)
class Task:
    """One batch to evaluate: its position (results are reduced in this order) and what the
    dataset needs to load it."""

    index: int
    payload: Any


class Dataset:
    """What :func:`ortnpu.evaluate_accuracy` needs from a dataset."""

    #: True when tasks name data on disk (cheap to send to workers); False when they carry it
    by_reference = True

    def tasks(self, batch: int) -> Iterator[Task]:
        """The batches in order."""
        raise NotImplementedError

    def count(self, batch: int) -> int | None:
        """The number of batches, when known without loading the data."""
        return None

    def load(self, payload: Any, specs: Sequence[InputSpec]) -> Batch:
        """``({input: array}, labels or None)`` of one task."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """What identifies the data in a results file (a resumed run must use the same)."""
        raise NotImplementedError


def _single(specs: Sequence[InputSpec], what: str) -> InputSpec:
    if len(specs) != 1:
        raise CalibrationError(f"{what} feeds single-input models; the model's inputs are "
                               f"{[s.name for s in specs]}: use .npz shards with one array "
                               "per input")
    return specs[0]


@dataclass
class ImageFolder(Dataset):
    """Images in one sub-folder per class; see the module docstring.

    Args:
        root: the folder holding one folder per class.
        size: the side the images are cropped to when the model input's height/width are not
            fixed numbers.
        crop: fraction of the resized image kept by the centre crop (0.875: resize to 256,
            crop 224, the usual ImageNet evaluation).
        mean, std: per-channel normalisation after scaling pixels to [0, 1].
    """

    root: str | os.PathLike
    size: int | None = None
    crop: float = 1.0
    mean: Sequence[float] = (0.0,)
    std: Sequence[float] = (1.0,)
    files: list[tuple[str, int]] = field(default_factory=list, repr=False)
    classes: list[str] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        root = Path(self.root)
        if not root.is_dir():
            raise CalibrationError(f"{root}: not a folder; give a folder with one sub-folder "
                                   "of images per class")
        if not 0.0 < self.crop <= 1.0:
            raise CalibrationError(f"crop must be in (0, 1], got {self.crop}")
        if any(s <= 0 for s in self.std):
            raise CalibrationError(f"std must be positive, got {list(self.std)}")
        self.classes = sorted(p.name for p in root.iterdir() if p.is_dir())
        if not self.classes:
            raise CalibrationError(f"{root}: has no class sub-folders; put each class's images "
                                   "in a folder named after it")
        self.files = [(str(f), label) for label, c in enumerate(self.classes)
                      for f in sorted((root / c).iterdir())
                      if f.suffix.lower() in IMAGE_EXTENSIONS]
        if not self.files:
            raise CalibrationError(f"{root}: the class folders hold no images "
                                   f"({', '.join(IMAGE_EXTENSIONS)})")

    def tasks(self, batch: int) -> Iterator[Task]:
        for i, start in enumerate(range(0, len(self.files), batch)):
            yield Task(i, self.files[start:start + batch])

    def count(self, batch: int) -> int:
        return -(-len(self.files) // batch)

    def describe(self) -> dict[str, Any]:
        return {"kind": "image-folder", "root": str(Path(self.root).resolve()),
                "images": len(self.files), "classes": len(self.classes), "size": self.size,
                "crop": self.crop, "mean": list(self.mean), "std": list(self.std)}

    def load(self, payload: Any, specs: Sequence[InputSpec]) -> Batch:
        spec = _single(specs, "an image folder")
        shape = spec.shape
        if shape is None or len(shape) != 4:
            raise CalibrationError(f"input {spec.name!r} has shape {shape}; an image folder "
                                   "feeds a 4-D image input (NCHW or NHWC)")
        nchw = shape[1] in (1, 3)
        c, h, w = (shape[1], shape[2], shape[3]) if nchw else (shape[3], shape[1], shape[2])
        if c not in (1, 3):
            raise CalibrationError(f"input {spec.name!r} has shape {list(shape)}: neither NCHW "
                                   "nor NHWC with 1 or 3 channels")
        if not (isinstance(h, int) and isinstance(w, int)):
            if self.size is None:
                raise CalibrationError(f"input {spec.name!r} has no fixed height and width "
                                       f"({list(shape)}); give the image size")
            h = w = self.size
        images = np.stack([self._image(path, int(c), int(h), int(w)) for path, _ in payload])
        if nchw:
            images = images.transpose(0, 3, 1, 2)
        labels = np.array([label for _, label in payload], np.int64)
        return {spec.name: np.ascontiguousarray(images, np.float32)}, labels

    def _image(self, path: str, c: int, h: int, w: int) -> np.ndarray:
        try:
            from PIL import Image
        except ImportError:
            raise CalibrationError("an image folder needs Pillow: pip install "
                                   "'ortnpu[images]'") from None
        try:
            with Image.open(path) as im:
                im = im.convert("L" if c == 1 else "RGB")
                scale = max(h, w) / self.crop / min(im.size)
                if scale != 1.0:
                    im = im.resize((max(w, round(im.size[0] * scale)),
                                    max(h, round(im.size[1] * scale))),
                                   Image.Resampling.BILINEAR)
                left, top = (im.size[0] - w) // 2, (im.size[1] - h) // 2
                im = im.crop((left, top, left + w, top + h))
                x = np.asarray(im, np.float32).reshape(h, w, c) / 255.0
        except OSError as exc:
            raise CalibrationError(f"{path}: cannot read the image: {exc}") from None
        mean = np.asarray(self.mean, np.float32)
        std = np.asarray(self.std, np.float32)
        return (x - mean) / std


@dataclass
class NpzShards(Dataset):
    """``.npz`` files of inputs and labels; see the module docstring.

    Args:
        paths: the shards, evaluated in this order.
        key: for a single-input model, the array holding the inputs.
        label_key: the array holding the labels (default: the first of :data:`LABEL_KEYS`
            present; none: unlabelled).
        batch_axes: sample axes of the input arrays where the model does not tell them.
    """

    paths: Sequence[str | os.PathLike]
    key: str | None = None
    label_key: str | None = None
    batch_axes: Mapping[str, int | None] | None = None
    sizes: list[int] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        from ortnpu.cli.files import read_arrays

        if not self.paths:
            raise CalibrationError("no .npz shards given")
        self.paths = [str(p) for p in self.paths]
        labels = None
        for p in self.paths:
            arrays = read_arrays(p, "the data")
            label = self._label_key(arrays, p)
            if labels is None:
                labels = label
            elif label != labels:
                raise CalibrationError(f"{p}: labels in {label!r}, but the first shard has "
                                       f"them in {labels!r}")
            self.sizes.append(len(arrays[label]) if label else -1)
        self.label_key = labels

    def _label_key(self, arrays: Mapping[str, np.ndarray], path: str) -> str | None:
        if self.label_key is not None:
            if self.label_key not in arrays:
                raise CalibrationError(f"{path}: has no label array {self.label_key!r}; it "
                                       f"holds {sorted(arrays)}")
            return self.label_key
        return next((k for k in LABEL_KEYS if k in arrays), None)

    def tasks(self, batch: int) -> Iterator[Task]:
        i = 0
        for path, size in zip(self.paths, self.sizes, strict=True):
            if size < 0:   # unlabelled: the sample count comes from the inputs, in the worker
                yield Task(i, (path, 0, None, batch))
                i += 1
                continue
            for start in range(0, size, batch):
                yield Task(i, (path, start, min(start + batch, size), batch))
                i += 1

    def count(self, batch: int) -> int | None:
        return sum(-(-s // batch) if s >= 0 else 1 for s in self.sizes)

    def describe(self) -> dict[str, Any]:
        return {"kind": "npz", "paths": [str(Path(p).resolve()) for p in self.paths],
                "sizes": self.sizes, "key": self.key, "label_key": self.label_key}

    def load(self, payload: Any, specs: Sequence[InputSpec]) -> Batch:
        path, start, stop, batch = payload
        arrays, labels = _open_shard(path, self.key, self.label_key, specs)
        if stop is None:   # an unlabelled shard is one task
            stop = 1 << 62
        parts, seen = [], 0
        for n, part in sample_batches(specs, arrays, batch_axes=self.batch_axes, batch=batch,
                                      limit=stop, where=path):
            if seen >= start:
                parts.append((n, part))
            seen += n
        if labels is not None and seen < stop:
            raise CalibrationError(f"{path}: the inputs hold {seen} samples but "
                                   f"{self.label_key!r} holds {len(labels)} labels")
        if len(parts) != 1:
            raise CalibrationError(f"{path}: an input stacks one sample per array row, so "
                                   "the model runs one sample at a time: use batch 1")
        y = None if labels is None else np.asarray(labels[start:stop]).astype(np.int64)
        return parts[0][1], y


_shard_cache: dict[str, Any] = {}


def _open_shard(path: str, key: str | None, label_key: str | None,
                specs: Sequence[InputSpec]) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """The shard's input arrays (memory-mapped where numpy stored them uncompressed, so a
    worker reads only the rows of its own batches) and labels; the last shard is kept open
    (workers take consecutive batches of it)."""
    from ortnpu.cli.cmd_compare import select_inputs
    from ortnpu.cli.files import read_arrays

    cache_key = f"{path}\0{key}\0{label_key}\0{[s.name for s in specs]}"
    if cache_key not in _shard_cache:
        _shard_cache.clear()
        arrays = read_arrays(path, "the data")   # checks every member's header
        inputs = {k: _mapped(path, k, arrays) for k in arrays if k != label_key}
        chosen = select_inputs(inputs, [s.name for s in specs], key, path)
        labels = arrays[label_key] if label_key else None
        _shard_cache[cache_key] = (chosen, labels)
    return _shard_cache[cache_key]


def _mapped(path: str, name: str, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    """Array ``name`` of an ``.npz``/``.npy`` file as a read-only memory map when its bytes lie
    uncompressed in the file (``numpy.save``/``numpy.savez``); else read whole
    (``numpy.savez_compressed``, an unusual header)."""
    import struct
    import zipfile

    fmt = np.lib.format
    try:
        if not zipfile.is_zipfile(path):
            return np.load(path, mmap_mode="r", allow_pickle=False)
        with zipfile.ZipFile(path) as zf:
            info = zf.getinfo(name + ".npy")
            if info.compress_type != zipfile.ZIP_STORED:
                return arrays[name]
            with zf.open(info) as f:
                version = fmt.read_magic(f)
                if version not in ((1, 0), (2, 0)):
                    return arrays[name]
                read = fmt.read_array_header_1_0 if version == (1, 0) else \
                    fmt.read_array_header_2_0
                shape, fortran, dtype = read(f)
                header = f.tell()
        with open(path, "rb") as fh:   # the member's data follows its local file header
            fh.seek(info.header_offset)
            local = struct.unpack("<4s2B4HL2L2H", fh.read(30))
        if local[0] != b"PK\x03\x04" or dtype.hasobject or 0 in shape:
            return arrays[name]
        start = info.header_offset + 30 + local[-2] + local[-1] + header
        return np.memmap(path, dtype, "r", start, shape, "F" if fortran else "C")
    except (OSError, ValueError, KeyError, struct.error, zipfile.BadZipFile):
        return arrays[name]   # reports a damaged file as reading it whole does


class Samples(Dataset):
    """Any iterable of ``(inputs, label)``; see the module docstring."""

    by_reference = False

    def __init__(self, items: Iterable[Any]) -> None:
        self.items = items

    def __getstate__(self) -> dict[str, Any]:
        """Workers get the dataset without its items: each task carries its own arrays, and a
        generator could not be pickled anyway."""
        return {"items": ()}

    def count(self, batch: int) -> int | None:
        return None

    def describe(self) -> dict[str, Any]:
        return {"kind": "iterable"}

    def tasks(self, batch: int) -> Iterator[Task]:
        pending: list[tuple[Any, Any]] = []
        i = 0
        for item in self.items:
            try:
                inputs, label = item
            except (TypeError, ValueError):
                raise CalibrationError(f"dataset item {i}: expected a pair (inputs, label), "
                                       f"got {type(item).__name__}") from None
            if label is not None and np.ndim(label) == 1:   # a whole batch
                if pending:
                    yield Task(i, _stack(pending))
                    i, pending = i + 1, []
                yield Task(i, (inputs, np.asarray(label)))
                i += 1
                continue
            pending.append((inputs, label))
            if len(pending) == batch:
                yield Task(i, _stack(pending))
                i, pending = i + 1, []
        if pending:
            yield Task(i, _stack(pending))

    def load(self, payload: Any, specs: Sequence[InputSpec]) -> Batch:
        inputs, labels = payload
        if not isinstance(inputs, Mapping):
            inputs = {_single(specs, "a dataset of plain arrays").name: inputs}
        return dict(inputs), labels


def _stack(pairs: list[tuple[Any, Any]]) -> tuple[Any, np.ndarray | None]:
    """One batch from single samples: each input stacked along a new axis 0."""
    labels = [label for _, label in pairs]
    if any(label is None for label in labels):
        if not all(label is None for label in labels):
            raise CalibrationError("some dataset items have a label and some do not")
        y = None
    else:
        y = np.asarray(labels, np.int64)
    first = pairs[0][0]
    if isinstance(first, Mapping):
        x: Any = {k: np.stack([np.asarray(p[0][k]) for p in pairs]) for k in first}
    else:
        x = np.stack([np.asarray(p[0]) for p in pairs])
    return x, y


def as_dataset(data: Any, **options: Any) -> Dataset:
    """``data`` as a :class:`Dataset`: one already, a folder (an image folder), an ``.npz``
    path or a list of them (shards), else an iterable of ``(inputs, label)``.

    Raises:
        CalibrationError: a path that is neither a folder nor an ``.npz``.
    """
    if isinstance(data, Dataset):
        return data
    if isinstance(data, (str, os.PathLike)):
        data = [data]
    if isinstance(data, (list, tuple)) and data and all(
            isinstance(d, (str, os.PathLike)) for d in data):
        paths = [Path(d) for d in data]
        if len(paths) == 1 and paths[0].is_dir():
            return ImageFolder(paths[0], **{k: v for k, v in options.items()
                                            if k in ("size", "crop", "mean", "std")})
        for p in paths:
            if p.is_dir() or p.suffix not in (".npz", ".npy"):
                raise CalibrationError(f"{p}: give one image folder (one sub-folder per class) "
                                       "or .npz shards")
        return NpzShards(paths, **{k: v for k, v in options.items()
                                   if k in ("key", "label_key", "batch_axes")})
    if isinstance(data, Iterable):
        return Samples(data)
    raise CalibrationError(f"cannot evaluate on a {type(data).__name__}: give an image folder, "
                           ".npz shards or an iterable of (inputs, label)")


__all__ = ["Dataset", "ImageFolder", "NpzShards", "Samples", "Task", "as_dataset"]
