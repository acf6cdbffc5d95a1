"""A remote call (the object store of ``archive_url``) bounded in time, for every
background job of the runtime that makes one: log replication, SQLite snapshots,
tiering.

The call runs in a worker thread under a deadline (:data:`REMOTE_CALL_SECONDS`,
besides the client's own connect and read timeouts). One that outlives it, or
is still running when its caller is cancelled (the runtime closing), is
abandoned: its thread finishes on its own and its result is never used, so a
remote that stopped answering never holds a pass, a write or a close. The
caller keeps its bookkeeping in async code after the call returns, and a call
must leave nothing half-done that matters if it is abandoned (an upload is
verified before anything local is deleted).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

import anyio

__all__ = ("REMOTE_CALL_SECONDS", "call_remote", "call_within")

_T = TypeVar("_T")

#: the longest one remote call (an upload of a run of records, a whole base, a
#: snapshot, a tiering pass) may take before it is abandoned as a failed attempt
REMOTE_CALL_SECONDS = 300.0


async def call_remote(call: Callable[..., _T], *args: object, seconds: float | None = None) -> _T:
    """*call* (*args*) in a worker thread, abandoned past *seconds* (default
    :data:`REMOTE_CALL_SECONDS`, read at each call) or on cancel.

    :raises TimeoutError: the deadline passed (the call goes on in its thread, unused)
    """
    with anyio.fail_after(REMOTE_CALL_SECONDS if seconds is None else seconds):
        return await anyio.to_thread.run_sync(call, *args, abandon_on_cancel=True)


def call_within(call: Callable[[], _T], seconds: float | None = None) -> _T:
    """*call* in a daemon thread of its own, waited for at most *seconds* (default
    :data:`REMOTE_CALL_SECONDS`): for blocking code that no cancel reaches (a
    start, in its worker thread). Past the deadline the thread is left to finish
    on its own (it never keeps the process from exiting), its result unused.

    :raises TimeoutError: the deadline passed
    """
    limit = REMOTE_CALL_SECONDS if seconds is None else seconds
    done = threading.Event()
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = call()
        except BaseException as exc:  # handed to the waiting caller
            outcome["error"] = exc
        finally:
            done.set()

    threading.Thread(target=run, name="marcus-remote-call", daemon=True).start()
    if not done.wait(limit):
        raise TimeoutError(f"no answer from the remote in {limit:g} s")
    if "error" in outcome:
        raise outcome["error"]
    result: _T = outcome["result"]
    return result
