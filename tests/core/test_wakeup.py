"""The per-loop wake-up: set before or after wait, cancellation, calls from a thread."""

from __future__ import annotations

import functools
import threading

import anyio
import anyio.lowlevel
import pytest
from anyio import wait_all_tasks_blocked

from marcus_persist._core._wakeup import loop_caller, new_wakeup, wakeup_factory


class TestWakeup:
    async def test_a_waiter_parks_until_set(self) -> None:
        wakeup = new_wakeup()
        woken: list[bool] = []

        async def waiter() -> None:
            await wakeup.wait()
            woken.append(True)

        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await wait_all_tasks_blocked()
            assert woken == []
            assert not wakeup.is_set
            wakeup.set()
        assert woken == [True]
        assert wakeup.is_set

    async def test_set_before_wait_returns_at_once_and_set_twice_is_a_no_op(self) -> None:
        wakeup = wakeup_factory()()
        wakeup.set()
        wakeup.set()
        await wakeup.wait()
        assert wakeup.is_set

    async def test_a_waiter_cancelled_while_parked_is_never_woken_by_it_later(self) -> None:
        old = new_wakeup()
        later = anyio.Event()
        steps: list[str] = []

        async def waiter(scope: anyio.CancelScope) -> None:
            with scope:
                await old.wait()
            steps.append("left")
            await later.wait()  # parked elsewhere now
            steps.append("woken by its own event")

        scope = anyio.CancelScope()
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter, scope)
            await wait_all_tasks_blocked()
            scope.cancel()
            await wait_all_tasks_blocked()
            old.set()  # must not touch the task parked on `later`
            await wait_all_tasks_blocked()
            assert steps == ["left"]
            later.set()
        assert steps == ["left", "woken by its own event"]

    async def test_many_waiters_are_woken_each_once(self) -> None:
        make = wakeup_factory()
        wakeups = [make() for _ in range(50)]
        woken: list[int] = []

        async def waiter(index: int) -> None:
            await wakeups[index].wait()
            woken.append(index)

        async with anyio.create_task_group() as tg:
            for index in range(50):
                tg.start_soon(waiter, index)
            await wait_all_tasks_blocked()
            for wakeup in reversed(wakeups):
                wakeup.set()
        assert sorted(woken) == list(range(50))


class TestLoopCaller:
    @pytest.mark.parametrize("calls", [1, 20])
    async def test_a_thread_runs_functions_on_the_loop_without_blocking(self, calls: int) -> None:
        call = loop_caller()
        wakeup = new_wakeup()
        loop_thread = threading.get_ident()
        seen: list[int] = []

        def on_loop(n: int) -> None:
            seen.append(n)
            assert threading.get_ident() == loop_thread
            if len(seen) == calls:
                wakeup.set()

        def worker() -> None:
            for n in range(calls):
                call(functools.partial(on_loop, n))

        thread = threading.Thread(target=worker)
        thread.start()
        await wakeup.wait()
        thread.join()
        assert seen == list(range(calls))
