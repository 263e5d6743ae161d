"""Data sources: where a party's data comes from, chosen by what ``--data`` names.

* :class:`DataSource` — the protocol: ``load()`` reads a data set whole.
* Built-ins: :class:`MnistSource`, :class:`CsvSource`, :class:`ParquetSource`,
  :class:`ImageFolderSource`, and :class:`TorchDatasetSource` (any in-memory
  ``torch.utils.data.Dataset``, from Python).
* :func:`data_source` — the source a ``--data`` value names (registered by kind,
  :func:`register_data_source`).
* :func:`local_data_from` — one client's :class:`~veilfl.ml.local_data.LocalData`,
  with its evaluation split; :func:`partitioned_local_data` — every simulated client's.
* :class:`DataSettings` — the declared options (``--data``, ``--eval-data``,
  ``--eval-fraction``, ``--label-column``, ``--image-size``, ``--image-mode``).
"""

from veilfl.ml.data_sources.client_data import (
    PartitionedData,
    local_data_from,
    partitioned_local_data,
)
from veilfl.ml.data_sources.image_folder import IMAGE_SUFFIXES, ImageFolderSource
from veilfl.ml.data_sources.in_memory import TorchDatasetSource
from veilfl.ml.data_sources.mnist_source import MnistSource
from veilfl.ml.data_sources.registry import (
    SourceFactory,
    data_source,
    data_source_names,
    register_data_source,
)
from veilfl.ml.data_sources.settings import DEFAULT_EVAL_FRACTION, DataSettings, ImageMode
from veilfl.ml.data_sources.source import DataSource, data_set_digest
from veilfl.ml.data_sources.tables import CsvSource, ParquetSource, read_csv_rows

__all__ = [
    "DEFAULT_EVAL_FRACTION",
    "IMAGE_SUFFIXES",
    "CsvSource",
    "DataSettings",
    "DataSource",
    "ImageFolderSource",
    "ImageMode",
    "MnistSource",
    "ParquetSource",
    "PartitionedData",
    "SourceFactory",
    "TorchDatasetSource",
    "data_set_digest",
    "data_source",
    "data_source_names",
    "local_data_from",
    "partitioned_local_data",
    "read_csv_rows",
    "register_data_source",
]
