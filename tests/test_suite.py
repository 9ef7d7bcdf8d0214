"""The suite itself: under ``make test`` the tests that share a module-scoped fixture
(a trained run, a built wheel) run on one pytest-xdist worker, which builds it once."""

from __future__ import annotations

import pytest


def test_tests_sharing_a_module_fixture_are_grouped_on_one_worker(request):
    if not request.config.getoption("loadgroup", default=False):
        pytest.skip("not under pytest-xdist's --dist loadgroup (make test)")
    grouped = [item for item in request.session.items if any(item.iter_markers("xdist_group"))]
    if not grouped:
        pytest.skip("no test with a module-scoped fixture was collected")
    # pytest-xdist sends a group to one worker by the "@group" it appends to the test id
    lost = [item.nodeid for item in grouped if "@" not in item.nodeid]
    assert not lost, (
        f"pytest-xdist did not group {len(lost)} of {len(grouped)} tests that share a "
        f"module fixture, e.g. {lost[:2]}: each worker builds the fixture again (pytest "
        f"{pytest.__version__}; pytest-dev/pytest-xdist#1386)"
    )
