"""Build every real model into the cache: digits are bundled, the rest are cached here.

Runs each builder in its own process (so one failure does not stop the others and each starts
with a fresh torch), passes ``--force`` and ``--out`` on, and prints a summary. Without
``--force`` models already in the cache are skipped, so a rerun is quick.

Run: ``python models/build_all.py [--force] [--out DIR] [--only NAME ...]``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# In order of cost; ppocr needs no torch, the others do (zoo also needs ortnpu: from_torch).
BUILDERS = ("ppocr", "ocr_text", "zoo", "mobilenet_v2", "efficientnet_lite0", "fashion_mnist_cnn",
            "fashion_resnet")


def main(argv: list[str] | None = None) -> int:
    """Run the builders and return non-zero if any failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="rebuild even if the files exist")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: cache)")
    parser.add_argument("--only", nargs="+", choices=BUILDERS, help="build only these")
    args = parser.parse_args(argv)

    passed = ["--force"] if args.force else []
    if args.out is not None:
        passed += ["--out", str(args.out)]
    results: list[tuple[str, int, float]] = []
    for name in args.only or BUILDERS:
        print(f"==> {name}", flush=True)
        start = time.monotonic()
        code = subprocess.call([sys.executable, str(HERE / f"{name}.py"), *passed])
        results.append((name, code, time.monotonic() - start))
    print("\nsummary:")
    for name, code, seconds in results:
        print(f"  {name:20s} {'ok' if code == 0 else f'FAILED ({code})':12s} {seconds:6.0f} s")
    return 0 if all(code == 0 for _, code, _ in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
