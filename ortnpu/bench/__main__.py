"""``python -m ortnpu.bench speed|accuracy [--models ...]``: the measured tables of docs/."""

from __future__ import annotations

import argparse
import platform

from ortnpu.bench import accuracy, models, speed


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m ortnpu.bench",
                                description="Side-by-side benchmarks on the real models.")
    p.add_argument("kind", choices=("speed", "accuracy"))
    p.add_argument("--models", default=",".join(models.LOADERS),
                   help=f"comma-separated, from {', '.join(models.LOADERS)}")
    p.add_argument("--threads", default="1,2", help="thread counts for speed (default 1,2)")
    p.add_argument("--repeat", type=int, default=30, help="timed runs per measurement")
    p.add_argument("--batch", type=int, default=1, help="batch size for speed")
    p.add_argument("--target", default="tflite-int8")
    p.add_argument("--methods", default="minmax",
                   help="ortnpu calibration methods for accuracy (comma-separated)")
    args = p.parse_args()
    import onnxruntime

    from ortnpu.domain import kernels

    print(f"# {platform.processor() or platform.machine()}, onnxruntime "
          f"{onnxruntime.__version__}, kernels: {kernels.describe()}")
    chosen = models.load([m.strip() for m in args.models.split(",") if m.strip()])
    if args.kind == "speed":
        rows = [speed.measure(m, int(t), args.repeat, args.batch, args.target)
                for m in chosen for t in args.threads.split(",")]
        print(speed.table(rows))
    else:
        rows = [r for m in chosen
                for r in accuracy.measure(m, args.target, tuple(args.methods.split(",")))]
        print(accuracy.table(rows))


if __name__ == "__main__":
    main()
