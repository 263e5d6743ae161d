"""Test-wide settings.

Hypothesis runs derandomized by default: every run tries the same examples, so a
property test cannot pass on one CI run and fail on the next. Set
``VEILFL_HYPOTHESIS=explore`` to search with fresh random examples (and more of them).
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("explore", max_examples=500)
settings.load_profile("explore" if os.environ.get("VEILFL_HYPOTHESIS") == "explore" else "ci")
