"""What an actor's handler provides: a staging overlay per batch (a transaction),
and, for handlers that opt in, overlays staged on top of a batch still committing."""

from __future__ import annotations

from typing import Any, Protocol, TypeVar, runtime_checkable

from marcus_persist._core._mailbox import Request

__all__ = ("Handler", "PipelinedHandler", "Staged", "Transaction")

M = TypeVar("M")
M_contra = TypeVar("M_contra", contravariant=True)


class Transaction(Protocol[M_contra]):
    """The staging overlay of one batch."""

    def apply(self, message: M_contra) -> Any:
        """Validate and stage one message; return the caller's answer.

        Must leave the overlay unchanged when it raises.
        """
        ...

    @property
    def changed(self) -> bool:
        """Whether anything was staged that needs a commit."""
        ...

    def commit(self) -> None:
        """Make the staged changes durable. Blocking; runs in a worker thread."""
        ...

    def publish(self) -> None:
        """Fold the staged changes into the committed state (on the event loop)."""
        ...


class Handler(Protocol[M_contra]):
    def begin(self) -> Transaction[M_contra]:
        """Start a staging overlay over the current committed state."""
        ...


@runtime_checkable
class PipelinedHandler(Protocol[M]):
    """A handler whose overlays can stage on top of a batch that is still committing.

    Opting in (by having ``begin_after``) promises: an overlay begun on top of
    *below* reads *below*'s staged changes until *below* is published, then
    the committed state; its ``commit`` needs only that every batch before it
    was published (commits never overlap: the actor starts *k+1*'s once *k*'s
    returned and was published); and dropping an overlay (because the batch
    below it failed) is the whole rollback: nothing of it reached the
    committed state or the storage.
    """

    def begin(self) -> Transaction[M]: ...

    def begin_after(self, below: Transaction[M] | None) -> Transaction[M]:
        """Start an overlay on top of *below* (``None``: over the committed state)."""
        ...


#: one staged message: its request and the answer ``apply`` gave
Staged = tuple[Request[Any], Any]
