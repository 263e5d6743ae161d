"""Our banded Toeplitz and BLT math against jax-privacy's ``matrix_factorization``,
an independent, maintained implementation. Skipped unless jax-privacy is installed
(it brings jax and jaxlib, about 400 MB, so it is in no extra):
``pip install jax-privacy`` to run it."""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
pytest.importorskip("jax_privacy")

from jax_privacy.matrix_factorization import buffered_toeplitz, toeplitz  # noqa: E402

from veilfl.privacy.banded_toeplitz import (  # noqa: E402
    banded_toeplitz_sensitivity,
    optimize_banded_toeplitz,
    toeplitz_prefix_squared_errors,
)
from veilfl.privacy.blt import BltStrategy, optimize_blt  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _float64() -> None:
    jax.config.update("jax_enable_x64", True)


@pytest.mark.parametrize(("rounds", "bands", "most"), [(30, 10, 3), (64, 16, 3)])
def test_the_banded_optimum_matches_jax_privacys(rounds: int, bands: int, most: int) -> None:
    theirs = np.asarray(toeplitz.optimize_banded_toeplitz(rounds, bands), dtype=np.float64)
    ours = np.array(optimize_banded_toeplitz(rounds=rounds, bands=bands, max_participations=most))

    assert np.allclose(ours, theirs, atol=1e-4)
    assert banded_toeplitz_sensitivity(
        theirs, rounds=rounds, max_participations=most, min_separation=bands
    ) ** 2 == pytest.approx(
        float(toeplitz.minsep_sensitivity_squared(theirs, bands, most, rounds)), rel=1e-9
    )
    assert np.mean(toeplitz_prefix_squared_errors(theirs, rounds)) == pytest.approx(
        float(np.mean(toeplitz.per_query_error(strategy_coef=theirs, n=rounds))), rel=1e-9
    )


def test_a_blts_coefficients_inverse_and_sensitivity_match_jax_privacys() -> None:
    rounds, most, separation = 50, 3, 7
    ours = BltStrategy(weights=(0.3, 0.15, 0.05), decays=(0.5, 0.9, 0.99))
    theirs = buffered_toeplitz.BufferedToeplitz.build(
        buf_decay=ours.decays, output_scale=ours.weights
    )
    coefficients = np.asarray(theirs.toeplitz_coefs(rounds))

    assert np.allclose(ours.coefficients(rounds), coefficients, atol=1e-12)
    assert np.allclose(
        ours.inverse_coefficients(rounds),
        np.asarray(theirs.inverse().toeplitz_coefs(rounds)),
        atol=1e-12,
    )
    assert ours.sensitivity(
        rounds=rounds, max_participations=most, min_separation=separation
    ) ** 2 == pytest.approx(
        float(toeplitz.minsep_sensitivity_squared(coefficients, separation, most, rounds))
    )


def test_our_blt_optimum_is_as_good_as_jax_privacys() -> None:
    rounds, most, separation = 100, 3, 10
    theirs = buffered_toeplitz.optimize(
        n=rounds, min_sep=separation, max_participations=most, error="mean", max_buffers=4
    )
    theirs_strategy = BltStrategy(
        tuple(float(w) for w in theirs.output_scale), tuple(float(t) for t in theirs.buf_decay)
    )
    ours = optimize_blt(
        rounds=rounds, buffers=4, max_participations=most, min_separation=separation
    )

    def loss(strategy: BltStrategy) -> float:
        sensitivity = strategy.sensitivity(
            rounds=rounds, max_participations=most, min_separation=separation
        )
        return sensitivity**2 * float(np.mean(strategy.prefix_squared_errors(rounds)))

    assert loss(ours) <= loss(theirs_strategy) * 1.01
