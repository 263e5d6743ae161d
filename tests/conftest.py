"""Test-wide settings.

Hypothesis runs derandomized by default: every run tries the same examples, so a
property test cannot pass on one CI run and fail on the next. Set
``VEILFL_HYPOTHESIS=explore`` to search with fresh random examples (and more of them).

Every test starts from the same logging setup: a test that runs a CLI command
(``--log-level error`` sets the ``veilfl`` logger's level, and the root logger's
handlers) would otherwise change what later tests' ``caplog`` sees.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import pytest
from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("explore", max_examples=500)
settings.load_profile("explore" if os.environ.get("VEILFL_HYPOTHESIS") == "explore" else "ci")


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    root_state = (root.level, list(root.handlers))
    loggers = {
        name: (logger.level, logger.propagate, logger.disabled, list(logger.handlers))
        for name, logger in logging.Logger.manager.loggerDict.items()
        if isinstance(logger, logging.Logger)
    }
    yield
    root.setLevel(root_state[0])
    root.handlers[:] = root_state[1]
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if not isinstance(logger, logging.Logger):
            continue
        if name in loggers:
            level, propagate, disabled, handlers = loggers[name]
            logger.setLevel(level)
            logger.propagate = propagate
            logger.disabled = disabled
            logger.handlers[:] = handlers
        else:
            logger.setLevel(logging.NOTSET)
