"""The coordinator's start-up check against the aggregators' signed minimum cohorts: a
run whose cohorts are smaller is refused in one line naming both flags; an unset
``--min-clients`` takes the largest minimum; forged policies are refused."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.run_descriptions import published

from veilfl.crypto.keys import AggregatorKeyPair, generate_keypair
from veilfl.errors import ConfigurationError
from veilfl.protocol.aggregator_minimums import fit_cohort, verified_minimums
from veilfl.protocol.buffered import BufferConfig
from veilfl.protocol.messages import LocalTrainingPlan
from veilfl.protocol.run_spec import RunSpec
from veilfl.protocol.sync_round import RoundConfig
from veilfl.secagg.aggregator_policy import AggregatorPolicy

KEYS = [generate_keypair() for _ in range(3)]
AGGREGATORS = published(KEYS)


def _signed(index: int, key: AggregatorKeyPair, minimum: int) -> AggregatorPolicy:
    unsigned = AggregatorPolicy(index=index, fingerprint=key.fingerprint, min_participants=minimum)
    return replace(unsigned, signature=key.sign(unsigned.statement()))


def _settings(
    *,
    per_round: int | None = 3,
    fraction: float | None = None,
    min_clients: int = 1,
    population: int | None = None,
    buffer: BufferConfig | None = None,
) -> RunSpec:
    return RunSpec(
        model_name="tiny",
        rounds=RoundConfig(
            num_rounds=1,
            clients_per_round=per_round,
            fraction=fraction,
            min_clients=min_clients,
        ),
        plan=LocalTrainingPlan(),
        population=population,
        buffer=buffer,
    )


def _refused(settings: RunSpec, minimums: dict[int, int], **kwargs: bool) -> str:
    with pytest.raises(ConfigurationError) as caught:
        fit_cohort(settings, minimums, **{"min_clients_given": True, **kwargs})
    message = str(caught.value)
    assert "\n" not in message and "--min-participants" in message
    return message


MINIMUMS = {1: 2, 2: 3, 3: 1}  # aggregator 2's is the largest


def test_clients_per_round_below_an_aggregator_s_minimum_is_refused_naming_both_flags() -> None:
    message = _refused(_settings(per_round=2, min_clients=2), MINIMUMS)
    assert message == (
        "--clients-per-round 2 is below aggregator 2's --min-participants 3; raise "
        "--clients-per-round or lower --min-participants."
    )


def test_an_explicit_min_clients_below_the_largest_minimum_is_refused() -> None:
    message = _refused(_settings(per_round=5, min_clients=2), MINIMUMS)
    assert message.startswith("--min-clients 2 is below aggregator 2's --min-participants 3")


def test_an_expected_sample_below_the_minimum_is_refused() -> None:
    settings = _settings(per_round=None, fraction=0.1, population=20)  # 2 expected
    message = _refused(settings, MINIMUMS, min_clients_given=False)
    assert "--fraction 0.1 of --population 20" in message


def test_a_fedbuff_buffer_below_the_minimum_is_refused() -> None:
    buffer = BufferConfig(buffer_size=2, max_staleness=2, max_versions=1)
    message = _refused(_settings(buffer=buffer), MINIMUMS, min_clients_given=False)
    assert message.startswith("--buffer-size 2 is below aggregator 2's --min-participants 3")


@given(st.dictionaries(st.integers(1, 5), st.integers(1, 6), min_size=1), st.integers(6, 9))
def test_an_unset_min_clients_takes_the_largest_minimum_and_says_so_once(
    minimums: dict[int, int], per_round: int
) -> None:
    fitted = fit_cohort(_settings(per_round=per_round), minimums, min_clients_given=False)
    largest = max(minimums.values())
    assert fitted.settings.rounds.min_clients == largest
    assert fitted.settings.rounds.clients_per_round == per_round
    if largest == 1:
        assert fitted.note is None and fitted.settings == _settings(per_round=per_round)
    else:
        assert fitted.note is not None and f"using {largest}" in fitted.note
        again = fit_cohort(fitted.settings, minimums, min_clients_given=False)
        assert again.note is None and again.settings == fitted.settings


def test_clients_per_round_that_follows_min_clients_rises_with_it() -> None:
    """Without --clients-per-round, a round samples --min-clients clients; both rise."""
    fitted = fit_cohort(
        _settings(per_round=2, min_clients=2),
        MINIMUMS,
        min_clients_given=False,
        clients_per_round_given=False,
    )
    assert (fitted.settings.rounds.clients_per_round, fitted.settings.rounds.min_clients) == (3, 3)


def test_a_run_that_fits_is_unchanged() -> None:
    settings = _settings(per_round=4, min_clients=3)
    assert fit_cohort(settings, MINIMUMS, min_clients_given=True).settings == settings
    assert fit_cohort(settings, {}, min_clients_given=False).settings == settings


def test_verified_minimums_takes_only_policies_signed_by_the_published_keys() -> None:
    honest = [_signed(j, key, j) for j, key in enumerate(KEYS, start=1)]
    assert verified_minimums(AGGREGATORS, honest) == {1: 1, 2: 2, 3: 3}
    raised = replace(honest[1], min_participants=9)  # rewritten on the way
    with pytest.raises(ConfigurationError, match="not signed by its published key"):
        verified_minimums(AGGREGATORS, [honest[0], raised, honest[2]])
    stranger = generate_keypair()
    other_key = _signed(2, stranger, 2)
    with pytest.raises(ConfigurationError, match="not its published key"):
        verified_minimums(AGGREGATORS, [honest[0], other_key, honest[2]])
    with pytest.raises(ConfigurationError, match=r"Aggregator 3 .* served no signed policy"):
        verified_minimums(AGGREGATORS, honest[:2])
