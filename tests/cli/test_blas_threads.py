"""The ``veilfl`` command runs numpy's BLAS on one thread unless told otherwise
(veilfl.cli's docstring says why)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"

# Loads the command the way the ``veilfl`` entry point does, then reports the setting
# and the thread count of every BLAS library numpy loaded.
_PROBE = """
import json, os
import veilfl.cli.main
from threadpoolctl import threadpool_info
blas = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
print(json.dumps({"env": os.environ.get("OPENBLAS_NUM_THREADS"), "blas": blas}))
"""


def _probe(env_value: str | None) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if env_value is not None:
        env["OPENBLAS_NUM_THREADS"] = env_value
    env["PYTHONPATH"] = str(SRC)
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_the_command_loads_numpy_with_one_blas_thread() -> None:
    result = _probe(None)

    assert result["env"] == "1"
    threads = result["blas"]
    assert isinstance(threads, list) and threads, "the command's imports load numpy's BLAS"
    assert set(threads) == {1}


def test_an_explicit_setting_is_kept() -> None:
    result = _probe("2")

    assert result["env"] == "2"
