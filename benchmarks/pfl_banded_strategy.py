"""Export pfl's banded matrix-factorisation strategy, for the side-by-side row of
``benchmarks/privacy_utility.py``.

Run it with a Python that has pfl 0.6 (pfl pins dp-accounting below 0.6, so it lives
in a venv of its own, not in veilfl's)::

    python3 -m venv /tmp/pfl-venv
    /tmp/pfl-venv/bin/pip install torch==2.13.0 'pfl[pytorch]==0.6.0'
    /tmp/pfl-venv/bin/python benchmarks/pfl_banded_strategy.py \
        --rounds 30 --min-separation 10 --epsilon 2 --out /tmp/pfl_strategy.json

It builds pfl's own ``BandedMatrixFactorizationMechanism`` (its optimiser, its
Cholesky factor, its PLD calibration) and writes the strategy matrix C it adds noise
through, the noise standard deviation over the clipping norm it calibrated, and the
epsilon pfl states. ``privacy_utility.py --pfl-strategy FILE`` then trains with
exactly that noise schedule on veilfl's partition and model, and reports the epsilon
that schedule really spends, computed from C's columns.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, required=True)
    parser.add_argument("--min-separation", type=int, required=True)
    parser.add_argument("--epsilon", type=float, required=True)
    parser.add_argument("--delta", type=float, default=1e-5)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    out = args.out.resolve()
    os.chdir(tempfile.mkdtemp())  # pfl writes its optimised matrix under the working folder

    from pfl.internal.ops import pytorch_ops  # type: ignore[import-not-found]
    from pfl.internal.ops.selector import (  # type: ignore[import-not-found]
        set_framework_module,
    )
    from pfl.privacy.ftrl_mechanism import (  # type: ignore[import-not-found]
        BandedMatrixFactorizationMechanism,
    )
    from pfl.privacy.privacy_accountant import (  # type: ignore[import-not-found]
        PLDPrivacyAccountant,
    )

    set_framework_module(pytorch_ops)
    mechanism = BandedMatrixFactorizationMechanism(
        1.0,
        args.rounds,
        args.min_separation,
        lambda compositions: PLDPrivacyAccountant(
            num_compositions=compositions,
            sampling_probability=1.0,
            mechanism="gaussian",
            epsilon=args.epsilon,
            delta=args.delta,
        ),
    )
    out.write_text(
        json.dumps(
            {
                "source": "pfl 0.6 BandedMatrixFactorizationMechanism",
                "rounds": args.rounds,
                "min_separation": args.min_separation,
                "stated_epsilon": args.epsilon,
                "delta": args.delta,
                "noise_stddev_over_clip": float(mechanism._relative_noise_stddev),
                "strategy": [[float(v) for v in row] for row in mechanism.query_matrix],
            }
        )
    )


if __name__ == "__main__":
    main()
