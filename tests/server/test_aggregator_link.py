"""The coordinator's log says once when an aggregator becomes unreachable, and once
when it answers again."""

from __future__ import annotations

import logging

import httpx
import pytest

from veilfl.auth.identity import Identity
from veilfl.protocol.effects import AggregatorFailed, CollectHoldings, HoldingsReported
from veilfl.server.aggregator_link import HttpAggregatorLink

URLS = {1: "http://aggregator-1", 2: "http://aggregator-2"}


class Aggregators(httpx.AsyncBaseTransport):
    """Both aggregators hold nothing; those in ``down`` refuse connections (or, if
    ``failing``, answer 503)."""

    def __init__(self) -> None:
        self.down: set[int] = set()
        self.failing = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        index = int(str(request.url.host).rsplit("-", 1)[1])
        if index in self.down:
            if self.failing:
                return httpx.Response(503, json={"message": "down"})
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(200, json={"clients": []})


def _lines(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


@pytest.mark.parametrize("failing", [False, True], ids=["refused", "http-503"])
async def test_an_aggregator_going_down_and_back_is_logged_once_each(
    caplog: pytest.LogCaptureFixture, failing: bool
) -> None:
    caplog.set_level(logging.INFO, logger="veilfl.server")
    aggregators = Aggregators()
    aggregators.failing = failing
    link = HttpAggregatorLink(
        URLS,
        vector_length=4,
        run_id="run-1",
        identity=Identity.generate(),
        transport=aggregators,
    )
    try:
        ask = CollectHoldings(round_id=1, aggregators=(1, 2))
        await link.collect_holdings(ask)
        aggregators.down = {2}
        for _ in range(3):
            events = await link.collect_holdings(ask)
            assert isinstance(events[0], HoldingsReported)
            assert isinstance(events[1], AggregatorFailed)
        down = _lines(caplog, "unreachable")
        assert len(down) == 1 and "aggregator 2 at http://aggregator-2" in down[0]

        aggregators.down = set()
        for _ in range(2):
            await link.collect_holdings(ask)
    finally:
        await link.close()
    assert len(_lines(caplog, "unreachable")) == 1
    back = _lines(caplog, "answers again")
    assert len(back) == 1 and "aggregator 2" in back[0]
