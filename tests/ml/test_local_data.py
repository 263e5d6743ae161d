import numpy as np
import pytest

from veilfl.errors import DataError
from veilfl.ml.datasets import ArrayDataset
from veilfl.ml.local_data import hold_out


def _data(n: int) -> ArrayDataset:
    return ArrayDataset(
        images=np.arange(n, dtype=np.float32).reshape(n, 1),
        labels=np.arange(n, dtype=np.int64),
    )


def test_hold_out_splits_every_example_into_exactly_one_part() -> None:
    split = hold_out(_data(50), fraction=0.2, seed=3)
    assert split.evaluation is not None
    assert len(split.evaluation) == 10
    together = np.concatenate([split.train.labels, split.evaluation.labels])
    assert sorted(together.tolist()) == list(range(50))


def test_hold_out_keeps_at_least_one_example_on_each_side() -> None:
    split = hold_out(_data(3), fraction=0.01)
    assert split.evaluation is not None
    assert len(split.evaluation) == 1 and len(split.train) == 2


def test_no_fraction_means_no_evaluation_split() -> None:
    data = _data(5)
    split = hold_out(data, fraction=0.0)
    assert split.evaluation is None and split.train is data


@pytest.mark.parametrize("fraction", [-0.1, 1.0])
def test_a_fraction_outside_the_unit_interval_is_refused(fraction: float) -> None:
    with pytest.raises(DataError, match="fraction"):
        hold_out(_data(5), fraction=fraction)
