"""Odd numbers in dashboard URLs answer 400/404 with a reason, never a 500; one-time tokens never reach the log."""
from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from bot.web.app import AccessLog


async def test_a_huge_or_odd_queue_offset_is_refused_not_a_500(client):
    for offset in ("99999999999999999999999", "-1", "abc"):
        response = await client.get(f"/queue?offset={offset}")
        assert response.status == 400 and "offset" in await response.text()
    assert (await client.get("/queue?offset=0")).status == 200


async def test_non_ascii_digits_never_open_a_case(client):
    for raw in ("%C2%B2", "%D9%A1", "1" * 19):
        assert (await client.get(f"/case/{raw}")).status == 404


def test_the_access_log_masks_one_time_login_tokens(caplog):
    logger = logging.getLogger("caveat.web.access")
    caplog.set_level("INFO", logger="caveat.web.access")
    AccessLog(logger, "").log(make_mocked_request("GET", "/login/link/SECRET-TOKEN"), web.Response(status=200), 0.01)
    assert "SECRET-TOKEN" not in caplog.text and "/login/link/<token>" in caplog.text
