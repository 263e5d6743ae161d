"""Moving weights between torch modules and named float32 arrays."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from veilfl.errors import UpdateRejectedError
from veilfl.ml.models import SimpleCNN
from veilfl.ml.weights import get_weights, set_weights


def _with_batch_norm() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))


def test_get_weights_copies_float_state_in_state_dict_order() -> None:
    model = _with_batch_norm()

    weights = get_weights(model)

    float_names = [n for n, t in model.state_dict().items() if t.is_floating_point()]
    assert list(weights) == float_names  # num_batches_tracked (int64) stays out
    assert "1.running_mean" in weights and "1.num_batches_tracked" not in weights
    assert all(a.dtype == np.float32 for a in weights.values())
    with torch.no_grad():
        model[0].weight.add_(1.0)
    assert not np.array_equal(weights["0.weight"], get_weights(model)["0.weight"])


def test_get_weights_converts_other_float_dtypes_to_float32() -> None:
    model = nn.Linear(2, 2).to(torch.bfloat16)
    weights = get_weights(model)
    assert weights["weight"].dtype == np.float32
    np.testing.assert_array_equal(weights["weight"], model.weight.float().detach().numpy())


def test_weights_round_trip_between_models() -> None:
    source, target = SimpleCNN(), SimpleCNN()

    set_weights(target, get_weights(source))

    for name, array in get_weights(target).items():
        np.testing.assert_array_equal(array, get_weights(source)[name])
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(source(x), target(x))


def test_read_only_and_float64_arrays_load() -> None:
    model = nn.Linear(2, 2)
    weights = {name: a.astype(np.float64) + 1.0 for name, a in get_weights(model).items()}
    for array in weights.values():
        array.flags.writeable = False

    set_weights(model, weights)

    np.testing.assert_allclose(get_weights(model)["bias"], weights["bias"])


def test_missing_or_unexpected_names_are_refused_and_the_model_is_untouched() -> None:
    model = SimpleCNN()
    before = get_weights(model)
    changed = {name: a + 1.0 for name, a in before.items()}

    with pytest.raises(UpdateRejectedError, match=r"missing \['conv1.bias'"):
        set_weights(model, {k: v for k, v in changed.items() if k != "conv1.bias"})
    with pytest.raises(UpdateRejectedError, match=r"unexpected \['extra'\]"):
        set_weights(model, {**changed, "extra": np.zeros(1, dtype=np.float32)})

    for name, array in get_weights(model).items():
        np.testing.assert_array_equal(array, before[name])


def test_a_shape_mismatch_is_refused_before_anything_is_written() -> None:
    model = SimpleCNN()
    before = get_weights(model)
    changed = {name: a + 1.0 for name, a in before.items()}
    changed["fc2.bias"] = np.zeros(11, dtype=np.float32)  # the last tensor is wrong

    with pytest.raises(UpdateRejectedError, match=r"'fc2.bias' has shape \(11,\).*\(10,\)"):
        set_weights(model, changed)

    for name, array in get_weights(model).items():
        np.testing.assert_array_equal(array, before[name])
