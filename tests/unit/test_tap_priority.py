"""Taps first (bot.priority): background work waits for the open taps, within its patience."""

from __future__ import annotations

import asyncio

from bot.priority import Taps


async def _turns(count: int = 5) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


async def test_quiet_returns_at_once_when_no_tap_is_open() -> None:
    taps = Taps()

    waiter = asyncio.ensure_future(taps.quiet())
    await _turns(1)

    assert waiter.done()
    assert taps.open == 0


async def test_quiet_waits_for_the_last_open_tap_to_close() -> None:
    taps = Taps()
    with taps.deciding() as first, taps.deciding() as second:
        waiter = asyncio.ensure_future(taps.quiet())
        await _turns()
        assert not waiter.done() and taps.open == 2

        first.close()
        first.close()  # twice is harmless: one tap is still open
        await _turns()
        assert not waiter.done() and taps.open == 1

        second.close()
        await _turns()
        assert waiter.done() and taps.open == 0
    assert taps.open == 0  # leaving the blocks closes nothing twice


async def test_a_tap_closes_when_its_block_ends_even_on_an_error() -> None:
    taps = Taps()
    try:
        with taps.deciding():
            raise RuntimeError("the handler failed")
    except RuntimeError:
        pass

    assert taps.open == 0
    await asyncio.wait_for(taps.quiet(), 1)


async def test_quiet_gives_up_after_its_patience() -> None:
    taps = Taps(patience=0)
    with taps.deciding():
        await asyncio.wait_for(taps.quiet(), 1)  # returns although the tap is open
        assert taps.open == 1


async def test_a_tap_closes_once_all_its_replies_are_done() -> None:
    taps = Taps()
    loop = asyncio.get_running_loop()
    answer, edit = loop.create_future(), loop.create_future()
    with taps.deciding() as tap:
        tap.close_after([answer, edit])
        answer.set_result(True)
        await _turns()
        assert taps.open == 1  # the edit is still on its way

        edit.set_exception(RuntimeError("Telegram refused the edit"))
        await _turns()
        assert taps.open == 0  # done either way
        edit.exception()  # retrieved, as the handler does
