"""veilfl.cli: the ``veilfl`` command.

Importing it sets ``OPENBLAS_NUM_THREADS=1`` unless the environment sets it already,
before anything loads numpy: veilfl's processes parallelise by request (the servers'
worker threads) or by client, and numpy's own BLAS threads would only compete for the
same cores. On a busy machine they also spin while they wait, which made each
aggregator spend about 7 times the CPU per share upload in the load test
(docs/benchmarks.md).
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__all__: list[str] = []
