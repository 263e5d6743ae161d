"""Privacy mechanisms by name: ``--dp-mechanism`` and the run's JSON name one.

The built-in mechanisms are registered by :mod:`veilfl.privacy.mechanisms`; a new one
registers itself there too (one line), and a test may register a throwaway one.
"""

from __future__ import annotations

from veilfl.errors import ConfigurationError
from veilfl.privacy.mechanisms.base import PrivacyMechanism

__all__ = ["mechanism_named", "mechanism_names", "register_mechanism", "unregister_mechanism"]

_MECHANISMS: dict[str, PrivacyMechanism] = {}


def register_mechanism(mechanism: PrivacyMechanism) -> PrivacyMechanism:
    """Make ``mechanism`` selectable by its name.

    Raises:
        ConfigurationError: if another mechanism already has that name.
    """
    known = _MECHANISMS.get(mechanism.name)
    if known is not None and known is not mechanism:
        raise ConfigurationError(
            f"A privacy mechanism named {mechanism.name!r} is already registered; choose "
            "another name."
        )
    _MECHANISMS[mechanism.name] = mechanism
    return mechanism


def unregister_mechanism(name: str) -> None:
    """Forget the mechanism called ``name`` (tests clean up their throwaway ones)."""
    _MECHANISMS.pop(name, None)


def mechanism_names() -> tuple[str, ...]:
    """The registered names, in registration order (``--dp-mechanism``'s choices)."""
    return tuple(_MECHANISMS)


def mechanism_named(name: str) -> PrivacyMechanism:
    """The mechanism registered as ``name``.

    Raises:
        ConfigurationError: for an unknown name, listing the registered ones.
    """
    try:
        return _MECHANISMS[name]
    except KeyError:
        raise ConfigurationError(
            f"Unknown DP mechanism {name!r}; use --dp-mechanism {' or '.join(mechanism_names())}."
        ) from None
