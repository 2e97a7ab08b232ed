"""``python -m bot.sandbox`` serves the Bot API and the page for the given users."""

from __future__ import annotations

import asyncio
import socket

import aiohttp
import pytest

from bot.sandbox.__main__ import parse_args, serve


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_serve_from_the_command_line() -> None:
    port = _free_port()
    args = parse_args(["--port", str(port), "--user", "42:Ada", "--token", "77:abc"])
    task = asyncio.create_task(serve(args))
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(50):
                try:
                    async with http.get(f"http://127.0.0.1:{port}/bot77:abc/getMe") as resp:
                        me = await resp.json()
                    break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)
            else:
                pytest.fail("the sandbox never started listening")
            async with http.get(f"http://127.0.0.1:{port}/sandbox/api/updates?since=0") as resp:
                page_state = await resp.json()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert me["result"]["id"] == 77
    assert page_state["user"]["first_name"] == "Ada"


def test_bad_user_option_is_rejected() -> None:
    with pytest.raises(SystemExit):
        parse_args(["--user", "ada"])
