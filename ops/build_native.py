"""cffi (API mode) builder of ``ortnpu.domain._native``, the C kernels of ``ops/``.

Used by setup.py (``cffi_modules``) at install time, and by hand during development::

    python ops/build_native.py          # builds ops/_build/ and copies the module in place

No ``-march=native``: the AVX2 loops are compiled in a target region of kernels_isa.c and chosen
at run time, so one binary runs on every x86-64 CPU. OpenMP is used when the compiler accepts
``-fopenmp`` (probed below); without it the kernels run on one thread. Environment:
``ORTNPU_NO_OPENMP=1`` builds without OpenMP; ``ORTNPU_EXTRA_CFLAGS`` adds compiler and linker
flags (sanitizers during development).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
HEADER = HERE / "ortnpu_kernels.h"
# one C file per op family (mirroring ortnpu/domain/ops_*.py), the shared state and the per-ISA
# inner loops, the compiled programs and the onnxruntime op; see docs/kernels.md
SOURCES = [
    "kernels_common.c",
    "kernels_isa.c",
    "kernels_elementwise.c",
    "kernels_linear.c",
    "kernels_pool.c",
    "kernels_resize.c",
    "kernels_steps.c",
    "kernels_softmax.c",
    "program.c",
    "ort_op.c",
    "domain_op.c",
    "ep_plugin.c",
]
DEPENDS = ["kernels_common.h", "kernels_isa.h", "rescale.h", "ortnpu_kernels.h",
           "ortnpu_domain.h", "ort_abi.h", "adaptive.h", "ortnpu_ep.h"]
DOMAIN_HEADER = HERE / "ortnpu_domain.h"
EP_HEADER = HERE / "ortnpu_ep.h"
#: Python functions the C side calls (domain_op.c: defined in ortnpu/domain/native_domain.py;
#: ep_plugin.c: in ortnpu/ep/plugin.py).
#: "Python+C": callable from the other C files of the module, not only from its own.
PYTHON_CALLBACKS = """
extern "Python+C" int64_t ortnpu_py_kernel_create(int32_t, int32_t, const int32_t *,
    const int64_t *, const double *, const char *const *, const size_t *, char *, size_t);
extern "Python+C" int32_t ortnpu_py_kernel_compute(int64_t, void *, int32_t, void *const *,
    const int32_t *, const int32_t *, const int64_t *, const int64_t *, char *, size_t);
extern "Python+C" void ortnpu_py_kernel_destroy(int64_t);
extern "Python+C" int64_t ortnpu_py_ep_create(const void *, const void *, char *, size_t);
extern "Python+C" void ortnpu_py_ep_release(int64_t);
extern "Python+C" int32_t ortnpu_py_ep_capability(int64_t, const void *, const void *,
    const void *, void *, char *, size_t);
extern "Python+C" int64_t ortnpu_py_ep_compile(int64_t, const void *, const void *,
    const void *, char *, size_t);
extern "Python+C" int32_t ortnpu_py_ep_compute(int64_t, const void *, void *, char *, size_t);
extern "Python+C" void ortnpu_py_ep_release_node(int64_t);
"""


def _rel(path: Path) -> str:
    """setuptools wants source paths relative to the project root (the working directory)."""
    try:
        return os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return str(path)


def _cdef() -> str:
    """The declarations between the cdef markers of the headers, and the Python callbacks."""
    parts = []
    for header in (HEADER, DOMAIN_HEADER, EP_HEADER):
        text = header.read_text()
        start = text.index("/* --- cdef begin --- */") + len("/* --- cdef begin --- */")
        parts.append(text[start:text.index("/* --- cdef end --- */")])
    return "\n".join(parts) + PYTHON_CALLBACKS


def _probe_openmp() -> bool:
    """True when the C compiler setuptools will use compiles and links with -fopenmp."""
    if os.environ.get("ORTNPU_NO_OPENMP"):
        return False
    try:
        from setuptools._distutils import ccompiler, sysconfig
    except ImportError:  # pragma: no cover - very old setuptools
        return False
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "omp_probe.c"
        src.write_text("#include <omp.h>\nint main(void) { return omp_get_max_threads() < 1; }\n")
        try:
            cc = ccompiler.new_compiler()
            sysconfig.customize_compiler(cc)
            objs = cc.compile([str(src)], output_dir=tmp, extra_postargs=["-fopenmp"])
            cc.link_executable(objs, str(Path(tmp) / "omp_probe"), extra_postargs=["-fopenmp"])
        except Exception:  # any compiler or linker failure: build without OpenMP
            return False
    return True


def _make(absolute: bool = False) -> FFI:
    """The builder; ``absolute`` paths for ``FFI.compile``, which changes directory."""
    path = str if absolute else _rel
    openmp = _probe_openmp()
    compile_args = ["-O3", "-std=gnu11", "-fno-math-errno"]
    link_args: list[str] = []
    if sys.platform == "win32":
        compile_args = ["/O2"]
    elif openmp:
        compile_args.append("-fopenmp")
        link_args.append("-fopenmp")
    extra = os.environ.get("ORTNPU_EXTRA_CFLAGS", "").split()  # e.g. -fsanitize=undefined
    compile_args += extra
    link_args += extra
    builder = FFI()
    builder.cdef(_cdef())
    builder.set_source(
        "ortnpu.domain._native",
        '#include "ortnpu_kernels.h"\n#include "ortnpu_domain.h"\n#include "ortnpu_ep.h"\n',
        sources=[path(HERE / s) for s in SOURCES],
        include_dirs=[path(HERE)],
        depends=[path(HERE / d) for d in DEPENDS],
        extra_compile_args=compile_args,
        extra_link_args=link_args,
        libraries=[] if sys.platform == "win32" else ["m"],
    )
    return builder


ffibuilder = _make()


def build_in_place() -> Path:
    """Compile into ops/_build and copy the extension next to ortnpu/domain/native.py."""
    root = HERE.parent
    out = Path(_make(absolute=True).compile(tmpdir=str(HERE / "_build"), verbose=False))
    target = root / "ortnpu" / "domain" / out.name
    # copy next to the target, then rename: a new file, not new bytes in the old one, so that
    # processes that have the old module mapped keep running (overwriting it in place made
    # running fuzz workers die with SIGSEGV)
    tmp = target.with_name(target.name + ".tmp")
    shutil.copy2(out, tmp)
    os.replace(tmp, target)
    return target


if __name__ == "__main__":
    print(build_in_place())
