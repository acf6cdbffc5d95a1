from __future__ import annotations

import marcus_persist
from marcus_persist import PersistenceError


def test_all_matches_public_names() -> None:
    public = {n for n in dir(marcus_persist) if not n.startswith("_")}
    public -= {"annotations", "backends", "stores", "cli", "compat", "ops"}  # subpackages
    assert set(marcus_persist.__all__) == public
    assert isinstance(marcus_persist.__all__, tuple)


def test_every_error_is_a_persistence_error() -> None:
    errors = [
        getattr(marcus_persist, n)
        for n in marcus_persist.__all__
        if n.endswith(("Error", "Locked", "Assigned", "Closed", "NotFound"))
    ]
    errors.append(marcus_persist.NotFound)
    assert len(errors) >= 8
    for error in errors:
        assert issubclass(error, PersistenceError), error
