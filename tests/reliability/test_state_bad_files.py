"""Suite 6 for our own formats: every way a state/patterns shard store file can be broken.

``_manifest.json``, ``_manifest.log`` and a shard file each get every truncation,
a bit flip at every byte and the special shapes (empty, wrong shape, invalid
UTF-8, NaN, deep nesting, a directory). Each case ends one of three ways:

* it loads EXACTLY the acknowledged data (nothing changed that matters);
* the damage lies in the log's last line, which no valid line follows, and every
  shard file the commits before it name is still there: as far as a reader can
  tell an unfinished append (never acknowledged), so it loads those commits, and
  the next commit keeps the unreadable bytes byte-exact in ``_manifest.log.torn``;
* the default policy raises ``CorruptDataError`` naming the file (or, for a log
  that lost acknowledged lines, a shard file the older map names that later
  commits removed) with the directory's bytes unchanged; the quarantine policy
  moves it aside byte-identical, reports it, and starts from the newest valid
  copy (the valid lines before a bad one, nothing for a bad base, the other
  shards for a bad shard); no record any commit did not write is ever loaded,
  and no shard file is ever deleted (those no map names are kept as ``.torn``).

The stores are driven directly (no runtime: thousands of cases); the runtime's
own path is in :mod:`.test_tokens_bad_files`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from marcus_persist._core._fs import OS_FS
from marcus_persist.backends._files import FileContext
from marcus_persist.backends.file._sealed import seal_document, seal_line
from marcus_persist.backends.file._shards import LOG, MANIFEST, SHARDS_DIR, ShardStore

from .damage import Case, damages
from .oracle import COUNTS

STORE = "marcus_state"
NESTED = b"[" * 100_000 + b"]" * 100_000
COMMITS: list[dict[str, dict[str, dict[str, Any] | None]]] = [
    {"a": {"k1": {"v": 1}, "k2": {"v": 2}}, "b": {"x": {"s": "\u00e9"}}},  # the base
    {"a": {"k3": {"v": 3}}},  # log line 1
    {"b": {"x": None, "y": {"v": [1, 2.5]}}},  # log line 2
    {"a": {"k1": {"v": 10}}},  # log line 3
]
BAD_LINES = {
    "garbage": b"not json\n",
    "wrong shape": seal_line(b'{"seq":"x","collections":{}}'),
    "invalid utf-8": seal_line(b'{"seq":99,"collections":{"\xff\xfe":{}}}'),
    "NaN": seal_line(b'{"seq":99,"collections":{},"meta":{"x":NaN}}'),
    "deep nesting": seal_line(b'{"seq":99,"collections":{},"meta":{"x":' + NESTED + b"}}"),
    "no checksum": b'{"seq":99,"collections":{}}\n',
    "nul bytes": b"\x00" * 40 + b"\n",
}
BAD_BASES: dict[str, bytes | None] = {
    "empty": b"",
    "whitespace": b" \n\t ",
    "array": b"[]",
    "wrong shape": seal_document(b'{"seq":"x","meta":{},"collections":{}}'),
    "invalid utf-8": seal_document(b'{"seq":9,"meta":{"\xff":1},"collections":{}}'),
    "NaN": seal_document(b'{"seq":9,"meta":{"x":NaN},"collections":{}}'),
    "deep nesting": seal_document(b'{"seq":9,"meta":{"x":' + NESTED + b'},"collections":{}}'),
    "unknown format": b'{"format":3,"seq":9,"meta":{},"collections":{}}',
    "a directory": None,
}
BAD_SHARDS: dict[str, bytes | None] = {
    "empty": b"",
    "array": b"[]",
    "invalid utf-8": b'{"k1": {"\xff": 1}}',
    "NaN": b'{"k1": {"v": NaN}}',
    "deep nesting": b'{"k1": {"v": ' + NESTED + b"}}",
    "another record": b'{"k1": {"v": 11}}',  # legal JSON, wrong bytes: the checksum says so
    "a directory": None,
}


def _apply(state: dict[str, dict[str, Any]], commit: dict[str, Any]) -> dict[str, dict[str, Any]]:
    new = {c: dict(r) for c, r in state.items()}
    for collection, batch in commit.items():
        records = new.setdefault(collection, {})
        for key, record in batch.items():
            if record is None:
                records.pop(key, None)
            else:
                records[key] = record
    return {c: r for c, r in new.items() if r}


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    """A store of one base and three log lines; the model state after each commit."""
    root = tmp_path_factory.mktemp("state") / "data"
    store = ShardStore(root / STORE, FileContext(root, OS_FS, False, "error"))
    store.open()
    states: list[dict[str, Any]] = []
    state: dict[str, Any] = {}
    for commit in COMMITS:
        store.commit(commit)
        state = _apply(state, commit)
        states.append(state)
    assert len((root / STORE / LOG).read_bytes().splitlines()) == len(COMMITS) - 1
    return root, states


def _read(store: ShardStore) -> dict[str, dict[str, Any]]:
    found = {c: dict(store.iter(c)) for c in store.collections()}
    return {c: r for c, r in found.items() if r}


def _open(case: Case, policy: str) -> tuple[ShardStore, FileContext, dict[str, Any] | None]:
    """The store and what it reads; ``None`` when the default policy refused (checked)."""
    ctx = FileContext(case.work, OS_FS, False, policy)  # type: ignore[arg-type]
    store = ShardStore(case.work / STORE, ctx)

    def read() -> dict[str, Any]:
        store.open()
        return _read(store)

    return store, ctx, case.load(policy, read)


def _base_or_shard_case(
    template: tuple[Path, list[dict[str, Any]]],
    work: Path,
    target: str,
    content: bytes | None,
    policy: str,
    fallback: dict[str, Any],
) -> None:
    """A damaged base or shard: refused, or aside and *fallback* loaded (or, harmless, all)."""
    root, states = template
    case = Case(root, work, f"{STORE}/{target}", content)
    store, ctx, loaded = _open(case, policy)
    if loaded is None or (loaded == states[-1] and not ctx.quarantined):
        COUNTS["damaged but legal files loaded"] += loaded is not None
        return
    assert policy == "quarantine", "a corrupt file was accepted"
    case.moved_aside(ctx)
    assert loaded == fallback
    store.commit({"c": {"new": {"v": 0}}})  # and it goes on from there
    assert _read(store) == _apply(fallback, {"c": {"new": {"v": 0}}})


def _log_case(
    template: tuple[Path, list[dict[str, Any]]],
    work: Path,
    content: bytes | None,
    at: int,
    policy: str,
) -> None:
    """A damaged log: the damage at byte *at* of *content* (everything before it intact)."""
    root, states = template
    # a damaged log may leave an older map naming shard files later commits removed
    case = Case(
        root, work, f"{STORE}/{LOG}", content, also="shard named by the manifest is missing"
    )
    store, ctx, loaded = _open(case, policy)
    if loaded is None:
        return
    if loaded == states[-1] and not (ctx.quarantined or ctx.problems or store.torn_tail):
        COUNTS["damaged but legal files loaded"] += 1
        return
    kept = _shard_files(case.work)
    if store.torn_tail:
        # in the last line (no valid line follows): the lines before it load, its bytes kept
        assert content is not None and content[at + 1 :].count(b"\n") <= 1, "valid lines follow"
        whole = content[:at].count(b"\n")
        start = len(b"".join(content.split(b"\n")[:whole])) + whole
        assert loaded == states[whole], f"not the first {whole} commits"
        assert store.torn_tail == content[start:] and not ctx.quarantined
        store.commit({"c": {"new": {"v": 0}}})
        torn = case.path.with_name(f"{LOG}.torn")
        assert torn.read_bytes() == content[start:], "the unreadable tail was not kept"
        COUNTS["unreadable log tails kept aside"] += 1
    else:
        # refused under the default policy; here aside, and the newest valid lines (or
        # less, for shards later commits superseded: reported) with nothing wrong loaded
        assert policy == "quarantine", "a corrupt log was accepted"
        assert ctx.quarantined or ctx.problems, "lost commits not reported"
        if ctx.quarantined:
            case.moved_aside(ctx)
        assert any(_within(loaded, state) for state in states), "a record no commit wrote"
        store.commit({"c": {"new": {"v": 0}}})
    # nothing deleted: every shard file there was is still there, maybe renamed aside
    assert kept <= _shard_files(case.work), "a shard file was deleted"


def _within(loaded: dict[str, dict[str, Any]], state: dict[str, dict[str, Any]]) -> bool:
    return all(
        key in state.get(c, {}) and state[c][key] == record
        for c, records in loaded.items()
        for key, record in records.items()
    )


def _shard_files(work: Path) -> set[bytes]:
    return {p.read_bytes() for p in (work / STORE / SHARDS_DIR).rglob("*") if p.is_file()}


def _shard_target(root: Path, collection: str) -> tuple[str, list[str]]:
    """The one shard file of *collection* (relative to the store) and its keys."""
    (path,) = (root / STORE / SHARDS_DIR / collection).iterdir()
    return str(path.relative_to(root / STORE)), sorted(json.loads(path.read_bytes()))


POLICIES = ("error", "quarantine")


@pytest.mark.parametrize("policy", POLICIES)
def test_every_damage_to_the_manifest_base(
    template: tuple[Path, list[dict[str, Any]]], tmp_path: Path, policy: str
) -> None:
    root, _states = template
    good = (root / STORE / MANIFEST).read_bytes()
    cases = [(n, c) for n, c, _at in damages(good)] + list(BAD_BASES.items())
    for _name, content in cases:
        _base_or_shard_case(template, tmp_path / "w", MANIFEST, content, policy, {})
    COUNTS["bad files tried"] += len(cases)


@pytest.mark.parametrize("policy", POLICIES)
def test_every_damage_to_the_manifest_log(
    template: tuple[Path, list[dict[str, Any]]], tmp_path: Path, policy: str
) -> None:
    root, _states = template
    good = (root / STORE / LOG).read_bytes()
    cases: list[tuple[bytes | None, int]] = [(c, at) for _n, c, at in damages(good)]
    cases += [(bad + good, 0) for bad in BAD_LINES.values()]  # valid lines follow: corrupt
    cases += [(good + bad, len(good)) for bad in BAD_LINES.values()]  # the last line
    cases += [(b"", 0), (None, 0)]
    for content, at in cases:
        _log_case(template, tmp_path / "w", content, at, policy)
    COUNTS["bad files tried"] += len(cases)


@pytest.mark.parametrize("policy", POLICIES)
def test_every_damage_to_a_shard(
    template: tuple[Path, list[dict[str, Any]]], tmp_path: Path, policy: str
) -> None:
    root, states = template
    target, keys = _shard_target(root, "b")
    fallback = {c: r for c, r in states[-1].items() if c != "b"}
    fallback.update({"b": {k: v for k, v in states[-1]["b"].items() if k not in keys}})
    fallback = {c: r for c, r in fallback.items() if r}
    good = (root / STORE / target).read_bytes()
    cases = [(n, c) for n, c, _at in damages(good)] + list(BAD_SHARDS.items())
    for _name, content in cases:
        _base_or_shard_case(template, tmp_path / "w", target, content, policy, fallback)
    COUNTS["bad files tried"] += len(cases)
