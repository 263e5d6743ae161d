"""The server optimiser as a run's setting: validated, stored exactly, built as asked."""

from __future__ import annotations

import numpy as np
import pytest

from veilfl.errors import ConfigurationError
from veilfl.strategy.fedopt import FedAdagrad, FedAdam, FedYogi, server_optimizer
from veilfl.strategy.settings import SERVER_OPTIMIZER_CHOICES, ServerOptimizerConfig


@pytest.mark.parametrize(
    ("name", "kind"), [("fedadam", FedAdam), ("fedyogi", FedYogi), ("fedadagrad", FedAdagrad)]
)
def test_build_makes_the_named_optimiser_with_the_settings_hyperparameters(
    name: str, kind: type
) -> None:
    config = ServerOptimizerConfig(name=name, beta1=0.5, beta2=0.75, tau=0.01)
    built = config.build(server_learning_rate=0.2)
    expected = server_optimizer(
        name,
        server_learning_rate=0.2,
        beta1=0.5,
        tau=0.01,
        **({} if name == "fedadagrad" else {"beta2": 0.75}),
    )
    x = np.ones(3, dtype=np.float32)
    delta = np.array([0.5, -1.0, 2.0])

    assert isinstance(built, kind)
    np.testing.assert_array_equal(built.step(x, delta), expected.step(x, delta))


def test_settings_round_trip_through_json() -> None:
    config = ServerOptimizerConfig(name="fedyogi", beta1=0.8, beta2=0.95, tau=0.1)
    assert ServerOptimizerConfig.from_json(config.to_json()) == config


@pytest.mark.parametrize(
    ("changes", "flag"),
    [
        ({"name": "fedsgd"}, "--server-optimizer"),
        ({"beta1": 1.0}, "--server-beta1"),
        ({"beta2": -0.5}, "--server-beta2"),
        ({"tau": 0.0}, "--server-tau"),
    ],
)
def test_values_out_of_range_are_refused_naming_the_flag(
    changes: dict[str, object], flag: str
) -> None:
    with pytest.raises(ConfigurationError, match=flag):
        ServerOptimizerConfig(**{"name": "fedadam", **changes})  # type: ignore[arg-type]


def test_fedavg_is_a_choice_but_not_an_optimiser_config() -> None:
    assert SERVER_OPTIMIZER_CHOICES[0] == "fedavg"
    with pytest.raises(ConfigurationError, match="leave server_optimizer as None"):
        ServerOptimizerConfig(name="fedavg")
