"""HTTP pieces every edge shares: peers with retries, request signing, request checks
and the JSON error responses. The edges (``server``, ``aggregator``, ``client``) import
these; no edge imports another edge."""

__all__: list[str] = []
