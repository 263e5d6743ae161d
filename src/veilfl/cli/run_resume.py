"""Resuming a run folder: a restart with other settings is refused, naming each setting
that differs (by its flag) with the stored and the new value. Runs before any slow work.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from veilfl.cli.run_options import setting_flags
from veilfl.errors import ConfigurationError

__all__ = ["SETTING_FLAGS", "check_resumable", "differing_settings", "stored_aggregator_urls"]

SETTING_FLAGS: dict[str, str] = setting_flags()
"""Where each stored setting comes from on the command line (derived from the
settings' declarations, :func:`~veilfl.cli.run_options.setting_flags`)."""

_ITEM_FIELDS: dict[str, str] = {
    "url": "URL",
    "public_key": "key",
    "signing_key": "signing key",
    "kem": "key type",
}
"""How a field of one ``--aggregator`` is named in a difference."""


def differing_settings(stored: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    """Each setting that differs, as ``FLAG: STORED (stored) vs NEW (now)``, in order.

    Args:
        stored: The run's settings as stored (``RunSpec.to_json()``).
        wanted: The settings the command line asks for, in the same form.
    """
    out: list[str] = []
    seen: set[str] = set()
    flags = setting_flags()
    for path, before, after in _differences(stored, wanted, ""):
        flag = _flag_for(path, flags)
        show = _show_key if path.endswith("key") else _show
        line = f"{flag} {show(before)} (stored) vs {show(after)} (now)"
        if flag in flags.values() and flag in seen:
            continue
        if path == "secure.aggregators" and "--aggregator (count)" in seen:
            continue  # "2 given vs 3 given" says the count again
        seen.add(flag)
        out.append(line)
    return out


def check_resumable(run_dir: Path, wanted: Mapping[str, Any]) -> None:
    """Refuse to start on a run folder whose run has other settings.

    Raises:
        ConfigurationError: one line naming every differing setting.
    """
    from veilfl.protocol.run_spec import RunSpec
    from veilfl.server.run_store import RunStore

    state = run_dir / "run.sqlite"
    if not state.exists():
        return
    with RunStore(state) as store:
        run_id = store.run_id()
        if run_id is None:
            return
        stored = RunSpec.from_json(store.config()).unsealed().to_json()
    differences = differing_settings(_plain(stored), _plain(wanted))
    if differences:
        raise ConfigurationError(
            f"The run folder {run_dir} holds run {run_id} with other settings: "
            f"{'; '.join(differences)}. Start with the stored settings to resume, or use a "
            "new --run-dir."
        )


def stored_aggregator_urls(run_dir: Path) -> list[str]:
    """The aggregator URLs the run in ``run_dir`` was started with, in index order
    (empty for a new folder or a plaintext run): what a resumed ``veilfl demo`` must
    start its aggregators at."""
    from veilfl.protocol.run_spec import RunSpec
    from veilfl.server.run_store import RunStore

    state = run_dir / "run.sqlite"
    if not state.exists():
        return []
    with RunStore(state) as store:
        if store.run_id() is None:
            return []
        secure = RunSpec.from_json(store.config()).secure
    return [] if secure is None else [a.url for a in secure.aggregators]


def _plain(settings: Mapping[str, Any]) -> dict[str, Any]:
    """JSON round trip: tuples become lists, so stored and new compare alike."""
    plain: dict[str, Any] = json.loads(json.dumps(settings))
    return plain


def _differences(before: Any, after: Any, path: str) -> list[tuple[str, Any, Any]]:
    if isinstance(before, dict) and isinstance(after, dict):
        out = []
        for key in [*before, *(k for k in after if k not in before)]:
            sub = f"{path}.{key}" if path else key
            out += _differences(before.get(key), after.get(key), sub)
        return out
    if _same_length_items(before, after):  # one --aggregator each: name what differs
        out = []
        for position, (old, new) in enumerate(zip(before, after, strict=True), start=1):
            item = f"{path}[{old.get('index', position)}]"
            for key in [*old, *(k for k in new if k not in old)]:
                if old.get(key) != new.get(key):
                    out.append((f"{item}.{key}", old.get(key), new.get(key)))
        return out
    if before != after:
        return [(path, before, after)]
    return []


def _same_length_items(before: Any, after: Any) -> bool:
    return (
        isinstance(before, list)
        and isinstance(after, list)
        and len(before) == len(after)
        and all(isinstance(x, dict) for x in [*before, *after])
    )


def _flag_for(path: str, flags: Mapping[str, str]) -> str:
    head, bracket, rest = path.partition("[")
    if bracket:  # secure.aggregators[2].url: "--aggregator 2 URL"
        number, _, key = rest.partition("].")
        return f"{_flag_for(head, flags)} {number} {_ITEM_FIELDS.get(key, key)}"
    probe = path
    while probe:
        if probe in flags:
            return flags[probe]
        probe = probe.rpartition(".")[0]
    return path


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, dict):
        return str(value.get("name", "on"))
    if isinstance(value, list):
        return f"{len(value)} given" if value and isinstance(value[0], dict) else str(value)
    return str(value)


def _show_key(value: Any) -> str:
    """A public key, shortened: enough to tell two apart."""
    text = _show(value)
    return text if len(text) <= 24 else f"{text[:12]}...{text[-6:]}"
