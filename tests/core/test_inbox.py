"""The actor's inbox: bounded, FIFO, cancellation before admission sends nothing."""

from __future__ import annotations

import anyio
import pytest
from anyio import wait_all_tasks_blocked

from marcus_persist._core._inbox import Inbox


class TestBackpressure:
    async def test_senders_beyond_the_size_wait_and_are_let_in_in_order(self) -> None:
        inbox: Inbox[int] = Inbox(2)
        async with anyio.create_task_group() as tg:
            for n in range(6):
                tg.start_soon(inbox.send, n)
                await wait_all_tasks_blocked()  # arrival order is the order started
            assert inbox.queued() == 6
            with pytest.raises(anyio.WouldBlock):
                inbox.send_nowait(99)  # full, and others wait before it
            taken = [await inbox.receive() for _ in range(6)]
        assert taken == list(range(6))
        assert inbox.queued() == 0

    async def test_a_receiver_parks_until_a_message_comes(self) -> None:
        inbox: Inbox[str] = Inbox(1)
        got: list[str] = []

        async def receiver() -> None:
            got.append(await inbox.receive())

        async with anyio.create_task_group() as tg:
            tg.start_soon(receiver)
            await wait_all_tasks_blocked()
            assert got == []
            inbox.send_nowait("m")
        assert got == ["m"]


class TestCancellation:
    async def test_a_sender_cancelled_while_waiting_is_never_let_in(self) -> None:
        inbox: Inbox[str] = Inbox(1)
        inbox.send_nowait("first")
        scope = anyio.CancelScope()
        outcome: list[bool] = []

        async def sender() -> None:
            with scope:
                await inbox.send("cancelled")
            outcome.append(scope.cancelled_caught)

        async with anyio.create_task_group() as tg:
            tg.start_soon(sender)
            await wait_all_tasks_blocked()
            scope.cancel()
            # room is made before the cancelled sender ran: it still must not get in
            assert inbox.receive_nowait() == "first"
            with pytest.raises(anyio.WouldBlock):
                inbox.receive_nowait()
        assert outcome == [True]
        assert inbox.queued() == 0


class TestClosing:
    async def test_closing_intake_drains_then_ends_and_refuses_waiters(self) -> None:
        inbox: Inbox[int] = Inbox(1)
        inbox.send_nowait(1)
        refused: list[type[BaseException]] = []

        async def waiter() -> None:
            try:
                await inbox.send(2)
            except anyio.ClosedResourceError as exc:
                refused.append(type(exc))

        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await wait_all_tasks_blocked()
            inbox.close_sending()
        assert refused == [anyio.ClosedResourceError]
        assert await inbox.receive() == 1  # what was in is still received
        with pytest.raises(anyio.EndOfStream):
            await inbox.receive()
        with pytest.raises(anyio.ClosedResourceError):
            inbox.send_nowait(3)

    async def test_closing_the_receiving_side_breaks_later_sends(self) -> None:
        inbox: Inbox[int] = Inbox(1)
        inbox.close()
        with pytest.raises(anyio.BrokenResourceError):
            inbox.send_nowait(1)
        with pytest.raises(anyio.BrokenResourceError):
            await inbox.send(1)
        with pytest.raises(anyio.ClosedResourceError):
            inbox.receive_nowait()

    def test_size_must_be_positive(self) -> None:
        with pytest.raises(ValueError, match="at least one"):
            Inbox(0)
