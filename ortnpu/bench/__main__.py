"""``python -m ortnpu.bench speed|accuracy|zoo|scale|exactness``: the measured tables of docs/."""

from __future__ import annotations

import argparse
import dataclasses
import platform

from ortnpu.bench import accuracy, exactness, models, scale, speed, zoo


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m ortnpu.bench",
                                description="Side-by-side benchmarks on the real models.")
    p.add_argument("kind", choices=("speed", "accuracy", "zoo", "scale", "exactness"))
    p.add_argument("--models", default=None,
                   help=f"comma-separated, from {', '.join(models.LOADERS)} (speed, accuracy; "
                   "default all) or from the zoo (zoo; default all zoo models that are built)")
    p.add_argument("--targets", default=",".join(zoo.PRESETS),
                   help="presets for zoo (comma-separated, default all three)")
    p.add_argument("--threads", default="1,2", help="thread counts for speed (default 1,2)")
    p.add_argument("--repeat", type=int, default=30, help="timed runs per measurement")
    p.add_argument("--batch", default="1,32", help="batch sizes for speed (default 1,32)")
    p.add_argument("--busy", default="no,yes",
                   help="speed without and/or with a competing busy process (default no,yes)")
    p.add_argument("--target", default="tflite-int8")
    p.add_argument("--exactness-samples", type=int, default=1, metavar="N",
                   help="speed: after the table, check onnxruntime's integer convolutions on N "
                        "test inputs against the exact sum (0: skip; default 1)")
    p.add_argument("--methods", default="auto",
                   help="ortnpu calibration methods for accuracy (comma-separated, default auto)")
    p.add_argument("--bias-correction", default="no", choices=("no", "yes", "both"),
                   help="ortnpu without bias correction (the default), with, or both rows")
    p.add_argument("--rounding", default="auto,nearest",
                   help="weight roundings of the ortnpu rows for accuracy (comma-separated: "
                        "auto, nearest, gptq, adaround; default auto,nearest: the default and "
                        "what its rounding adds)")
    p.add_argument("--adaround", default="no", choices=("no", "yes", "both"),
                   help="also rows with learned rounding (AdaRound): no (the default), yes, or "
                        "both (the same as adding adaround to --rounding)")
    p.add_argument("--adaround-iterations", type=int, default=1000, metavar="N",
                   help="Adam steps per layer of the learned rounding (default 1000)")
    p.add_argument("--samples", type=int, default=None,
                   help="evaluate accuracy on the first N evaluation samples only (default all); "
                        "exactness: the test inputs checked (default 2)")
    p.add_argument("--crops", type=int, default=scale.CROPS,
                   help=f"wallpaper crops MobileNetV2 is evaluated on in scale (default "
                        f"{scale.CROPS})")
    p.add_argument("--crops-cache", default=None, metavar="NPZ",
                   help="where scale caches the decoded crops (default: wallpaper_crops_N.npz "
                        "in the model cache)")
    args = p.parse_args()
    import onnxruntime

    from ortnpu.domain import kernels

    print(f"# {platform.processor() or platform.machine()}, onnxruntime "
          f"{onnxruntime.__version__}, kernels: {kernels.describe()}")
    names = [m.strip() for m in (args.models or "").split(",") if m.strip()]
    if args.kind == "zoo":
        unknown = [n for n in names if n not in zoo.ZOO]
        if unknown:
            raise SystemExit(f"unknown zoo model(s) {unknown}; known: {', '.join(zoo.ZOO)}")
        zoo.main(names or list(zoo.ZOO), [t.strip() for t in args.targets.split(",")])
        return
    if args.kind == "scale":
        from pathlib import Path

        from ortnpu import models_cache

        cache = Path(args.crops_cache) if args.crops_cache else (
            models_cache.cache_dir() / f"wallpaper_crops_{args.crops}.npz")
        raise SystemExit(scale.main(args.crops, cache, names or None))
    chosen = models.load(names or list(models.LOADERS))
    if args.kind == "exactness":
        exactness.main(chosen, args.samples or 2)
        return
    if args.kind == "speed":
        threads = tuple(int(t) for t in args.threads.split(","))
        batches = tuple(int(b) for b in args.batch.split(","))
        busy = tuple(b.strip() == "yes" for b in args.busy.split(","))
        reports = [speed.measure(m, threads, args.repeat, batches, busy, args.target)
                   for m in chosen]
        print(speed.table(reports))
        if args.exactness_samples > 0:
            # what the int8 column computed: onnxruntime's integer convolutions against the
            # exact sum (they clip on CPUs without VNNI), after the timing
            checks = [exactness.check_model(m, args.exactness_samples, whole=16) for m in chosen]
            print("\nWhat the onnxruntime int8 sessions computed (`python -m ortnpu.bench "
                  "exactness`, 16 inputs for the top-1 columns):\n")
            print(exactness.report(checks))
    else:
        if args.samples:
            chosen = [dataclasses.replace(m, test=m.test[:args.samples], labels=None
                                          if m.labels is None else m.labels[:args.samples])
                      for m in chosen]
        choice = {"no": (False,), "yes": (True,), "both": (False, True)}
        roundings = [r.strip() for r in args.rounding.split(",") if r.strip()]
        if args.adaround != "no" and "adaround" not in roundings:
            roundings = ([] if args.adaround == "yes" else roundings) + ["adaround"]
        rows = [r for m in chosen
                for r in accuracy.measure(m, args.target, tuple(args.methods.split(",")),
                                          bias_correction=choice[args.bias_correction],
                                          roundings=tuple(roundings),
                                          adaround_iterations=args.adaround_iterations)]
        print(accuracy.table(rows))


if __name__ == "__main__":
    main()
