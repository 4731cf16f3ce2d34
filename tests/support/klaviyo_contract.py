"""Klaviyo's OpenAPI contract for the tests: the vendored copy (or ``$KLAVIYO_OPENAPI_SPEC``), never optional.

A missing contract fails the tests that need it: it never skips them, so the contract checks can't go quiet.
"""

from __future__ import annotations

import pytest

from simulators.klaviyo import Spec, load_spec, spec_path


def require_spec() -> Spec:
    """The loaded contract; fails the calling test (or fixture) when it cannot be read."""
    spec = load_spec()
    if spec is None:
        pytest.fail(f"Klaviyo's OpenAPI contract not found at {spec_path()}: it is vendored in the repository "
                    "(scripts/vendor_klaviyo_spec.py writes it); restore it or point $KLAVIYO_OPENAPI_SPEC at a copy",
                    pytrace=False)
    return spec
