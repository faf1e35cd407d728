"""Shared fixtures.

``require_c``: tests of the C paths skip only when nothing says the C kernels should be here;
when they are expected (``ORTNPU_REQUIRE_C`` set, or a C compiler found when the installed
package was built, see ``ortnpu.domain.native.expected``) a missing module FAILS the test, so a
run that imports a source checkout without the built module cannot pass for a C run.

``simd``: runs a test once per SIMD path the CPU has (AVX-512 VNNI, AVX2, portable C); kernels
and programs built inside the test take that path.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

SIMD = ["avx512", "avx2", "scalar"]


def c_kernels_or_skip() -> None:
    """Return when the C kernels are importable; fail when they are expected; else skip."""
    import ortnpu
    from ortnpu.domain import native

    if native.AVAILABLE:
        return
    why = native.expected()
    if why:
        pytest.fail(f"the C kernels are expected ({why}) but ortnpu.domain._native is missing "
                    f"({native.IMPORT_ERROR}); ortnpu was imported from {ortnpu.__file__}",
                    pytrace=False)
    pytest.skip("C kernels not built (no C compiler when ortnpu was built)")


@pytest.fixture
def require_c() -> None:
    """See :func:`c_kernels_or_skip`."""
    c_kernels_or_skip()


@pytest.fixture(params=SIMD)
def simd(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run the test on one SIMD path (the paths this CPU lacks are skipped)."""
    from ortnpu.domain import native

    if request.param == "avx2" and not native.has_avx2():
        pytest.skip("this CPU has no AVX2")
    if request.param == "avx512" and not native.has_avx512_vnni():
        pytest.skip("this CPU has no AVX-512 VNNI")
    native.set_simd(request.param)
    yield request.param
    native.set_simd("auto")
