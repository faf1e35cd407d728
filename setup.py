"""Build hook: compile the C kernels of ``ops/`` with cffi when a C compiler is available.

All metadata lives in pyproject.toml. The extension ``ortnpu.domain._native`` is optional: when
no compiler is found or the compile fails, the install still succeeds (with a warning) and ortnpu
runs its numpy reference kernels, which give the same results, only slower. ``ortnpu info``
says which kernels are in use.
"""

from __future__ import annotations

import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """build_ext that turns a failed compile into a warning instead of a failed install."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # no compiler, missing headers, ...: numpy kernels then
            _warn(exc)

    def build_extension(self, ext) -> None:  # type: ignore[no-untyped-def]
        try:
            super().build_extension(ext)
        except Exception as exc:
            _warn(exc)


def _warn(exc: BaseException) -> None:
    print("\n*** ortnpu: the C kernels could not be built "
          f"({type(exc).__name__}: {exc}).\n*** ortnpu will use its numpy reference kernels "
          "(same results, slower). Install a C compiler and reinstall to get them.\n",
          file=sys.stderr)


setup(
    cffi_modules=["ops/build_native.py:ffibuilder"],
    cmdclass={"build_ext": OptionalBuildExt},
)
