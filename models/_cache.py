"""Cache location and command-line plumbing shared by every builder; needs no torch.

``ppocr.py`` only copies files, so it must run in any venv with onnxruntime; the torch-based
builders import these helpers through ``_common``.
"""

from __future__ import annotations

import argparse
import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

REPO_ROOT = Path(__file__).resolve().parent.parent


def _models_cache_module() -> ModuleType:
    """Load ``ortnpu/models_cache.py`` by path so the cache rule has one home.

    Importing the ``ortnpu`` package itself would pull in its runtime dependencies, which the
    model-building venv need not have.
    """
    path = REPO_ROOT / "ortnpu" / "models_cache.py"
    spec = importlib.util.spec_from_file_location("_ortnpu_models_cache", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cache_dir() -> Path:
    """Return (and create) the model cache folder, honouring ``ORTNPU_MODEL_CACHE``."""
    path: Path = _models_cache_module().cache_dir()
    path.mkdir(parents=True, exist_ok=True)
    return path


def parse_args(description: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the options every builder shares, so ``build_all.py`` can pass them on.

    Args:
        description: Text for ``--help``.
        argv: Arguments (default: ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--force", action="store_true", help="rebuild even if the files exist")
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default: the ortnpu model cache)"
    )
    return parser.parse_args(argv)


def output_dir(args: argparse.Namespace) -> Path:
    """Return the folder to write into: ``--out`` or the cache."""
    if args.out is None:
        return cache_dir()
    args.out.mkdir(parents=True, exist_ok=True)
    return args.out


def up_to_date(paths: Sequence[Path], force: bool) -> bool:
    """Say whether a build can be skipped, printing why, so reruns cost nothing."""
    if force:
        return False
    missing = [p for p in paths if not p.is_file()]
    if missing:
        return False
    print("already built (use --force to rebuild):")
    for p in paths:
        print(f"  {p}  ({p.stat().st_size / 1e6:.2f} MB)")
    return True
