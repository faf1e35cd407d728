"""Build hook: compile the C kernels of ``ops/`` with cffi when a C compiler is available.

All metadata lives in pyproject.toml. The extension ``ortnpu.domain._native`` is optional: when
no compiler is found or the compile fails, the install still succeeds (with a warning) and ortnpu
runs its numpy reference kernels, which give the same results, only slower. ``ortnpu info``
says which kernels are in use.

The build leaves a record, ``ortnpu/domain/_native_build.json`` (the compiler found, whether the
module was built, the error), so that tests and the fuzzer know the C kernels are *expected*
and fail loudly instead of quietly testing only the numpy kernels when the module is missing
(``ortnpu.domain.native.expected``).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import sysconfig

from setuptools import setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """build_ext that turns a failed compile into a warning instead of a failed install."""

    def run(self) -> None:
        self._errors: list[str] = []
        try:
            super().run()
        except Exception as exc:  # no compiler, missing headers, ...: numpy kernels then
            self._errors.append(f"{type(exc).__name__}: {exc}")
            _warn(exc)
        self._write_record()

    def build_extension(self, ext) -> None:  # type: ignore[no-untyped-def]
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._errors.append(f"{type(exc).__name__}: {exc}")
            _warn(exc)

    def _write_record(self) -> None:
        """Write ``_native_build.json`` next to each extension (see the module docstring)."""
        for ext in self.extensions:
            target = self.get_ext_fullpath(ext.name)
            record = {"compiler": _compiler(), "built": os.path.exists(target),
                      "error": "; ".join(getattr(self, "_errors", []))[:2000]}
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(os.path.join(os.path.dirname(target), "_native_build.json"), "w",
                      encoding="utf-8") as f:
                json.dump(record, f)


def _compiler() -> str:
    """The C compiler the build would use, if it is on this machine ('' when none)."""
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    return shutil.which(cc.split()[0]) or ""


def _warn(exc: BaseException) -> None:
    print("\n*** ortnpu: the C kernels could not be built "
          f"({type(exc).__name__}: {exc}).\n*** ortnpu will use its numpy reference kernels "
          "(same results, slower). Install a C compiler and reinstall to get them.\n",
          file=sys.stderr)


setup(
    cffi_modules=["ops/build_native.py:ffibuilder"],
    cmdclass={"build_ext": OptionalBuildExt},
)
