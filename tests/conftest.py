"""Shared fixtures.

``require_c``: tests of the C paths skip only when nothing says the C kernels should be here;
when they are expected (``ORTNPU_REQUIRE_C`` set, or a C compiler found when the installed
package was built, see ``ortnpu.domain.native.expected``) a missing module FAILS the test, so a
run that imports a source checkout without the built module cannot pass for a C run.
"""

from __future__ import annotations

import pytest


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
