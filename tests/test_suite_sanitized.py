"""The suite-wide sanitizer (``tests/conftest.py``, ``tests/sanitizer.py``) is on wherever the
tests run Triton's interpreter: this test itself runs inside it."""
import os

import pytest

import sanitizer


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET", "0") in ("", "0"),
                    reason="the sanitizer instruments Triton's interpreter (CPU runs only)")
def test_tests_run_under_the_sanitizer():
    if os.environ.get(sanitizer.SANITIZE_ENV) == "0":
        pytest.skip(f"{sanitizer.SANITIZE_ENV}=0 switches the suite-wide sanitizer off")
    assert sanitizer.suite_sanitized()
    assert len(sanitizer._ACTIVE) == 1
