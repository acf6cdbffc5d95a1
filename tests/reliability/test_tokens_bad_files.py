"""Suite 6 for token usage on files: ``token_usage.json``, a segment of its write-ahead
log, the previous format's ``token_usage.log`` and an archive month, each with every
truncation, a bit flip at every byte and the special shapes; then the runtime's own
path for every file type, and stale temp files.

Outcomes as in :mod:`.test_state_bad_files`: exactly the acknowledged data; or an
unreadable tail no valid record follows (an unfinished append, as far as a reader
can tell: the log's batches before it load; a previous-format tail's bytes are kept
in ``token_usage.log.torn`` by the checkpoint that removes that log); or
refused naming the file (directory unchanged), or, under quarantine, moved aside
byte-identical and started from the newest valid copy (the checkpoint for a bad
log, the log alone for a bad checkpoint, no month for a bad archive). A log cut
exactly at a line boundary reads as the earlier batches: nothing tells it from a
log those batches never reached (counted apart).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from marcus_persist import CorruptDataError, open_runtime
from marcus_persist._core._codec import encode
from marcus_persist._core._fs import OS_FS
from marcus_persist.backends._contract import DocumentFn
from marcus_persist.backends._files import FileContext
from marcus_persist.backends.file._sealed import seal_document, seal_line
from marcus_persist.backends.file._tokens import (
    ARCHIVE_DIR,
    LOG_FILE,
    TOKENS_DIR,
    TOKENS_FILE,
    FileTokenStorage,
)
from marcus_persist.stores.tokens._document import normalize

from .damage import Case, damages, snapshot
from .oracle import COUNTS
from .test_state_bad_files import BAD_LINES, NESTED, POLICIES

MONTH = "2026-01"
ARCHIVED = {"daily_usage": {"2026-01-05": {"anthropic": {"requests": 1, "cost_micros": 5}}}}
DOCUMENT = {"upto": 1, "daily_usage": {}, "log_seq": 0, "wal_lsn": 1}
#: the previous format's document: it holds the batch of line 1
PREVIOUS = {"upto": 1, "daily_usage": {}, "log_seq": 1}
BATCHES = [[{"n": n}] for n in (2, 3, 4)]  # one log record (or previous-format line) each
BAD_DOCUMENTS: dict[str, bytes | None] = {
    "empty": b"",
    "whitespace": b" \n\t ",
    "array": b"[]",
    "wrong shape": seal_document(b'{"daily_usage":[],"log_seq":1}'),
    "invalid utf-8": seal_document(b'{"daily_usage":{"\xff\xfe":{}},"log_seq":1}'),
    "NaN": seal_document(b'{"daily_usage":{},"x":NaN,"log_seq":1}'),
    "deep nesting": seal_document(b'{"daily_usage":{},"x":' + NESTED + b',"log_seq":1}'),
    "a damaged seal": b'{"formas":2,"daily_usage":{},"log_seq":1,"crc32":"00000000"}',
    "a directory": None,
}

Loaded = tuple[dict[str, Any] | None, list[dict[str, Any]], dict[str, Any] | None]


def _document(body: dict[str, Any]) -> DocumentFn:
    return lambda seen=None: dict(body)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint holding batch 1 (record 1), then a log of three batches (as a crash
    leaves it: no close)."""
    root = tmp_path_factory.mktemp("tokens") / "data"
    storage = FileTokenStorage(FileContext(root, OS_FS, False, "error"))
    storage.load(normalize)
    storage.commit([{"n": 1}], _document({"upto": 1, "daily_usage": {}}), {MONTH: ARCHIVED})
    assert storage.checkpoint()
    for batch in BATCHES:
        storage.commit(batch, _document({"upto": 0}), {})
    assert storage.logged.segments() == [2] and storage.logged.last_lsn == 4
    assert _load(FileTokenStorage(FileContext(root, OS_FS, False, "error"))) == _full()
    return root


@pytest.fixture(scope="module")
def previous(tmp_path_factory: pytest.TempPathFactory, template: Path) -> Path:
    """The previous format: a document holding line 1, then three log lines."""
    root = tmp_path_factory.mktemp("previous") / "data"
    (root / ARCHIVE_DIR).mkdir(parents=True)
    month = f"{ARCHIVE_DIR}/{MONTH}.json"
    (root / month).write_bytes((template / month).read_bytes())
    (root / TOKENS_FILE).write_bytes(seal_document(encode(PREVIOUS)))
    lines = [encode({"seq": n, "records": b}) for n, b in enumerate(BATCHES, 2)]
    (root / LOG_FILE).write_bytes(b"".join(seal_line(line) for line in lines))
    assert _load(FileTokenStorage(FileContext(root, OS_FS, False, "error"))) == _full(
        document=PREVIOUS
    )
    return root


def _full(batches: int = len(BATCHES), document: dict[str, Any] = DOCUMENT) -> Loaded:
    return document, [r for batch in BATCHES[:batches] for r in batch], ARCHIVED


def _load(storage: FileTokenStorage) -> Loaded:
    document, records = storage.load(normalize)
    return document, records, storage.archive(MONTH)


def _open(case: Case, policy: str) -> tuple[FileTokenStorage, FileContext, Loaded | None]:
    ctx = FileContext(case.work, OS_FS, False, policy)  # type: ignore[arg-type]
    storage = FileTokenStorage(ctx)
    return storage, ctx, case.load(policy, lambda: _load(storage))


def _whole_file_case(
    template: Path, work: Path, target: str, content: bytes | None, policy: str, fallback: Loaded
) -> None:
    case = Case(template, work, target, content)
    storage, ctx, loaded = _open(case, policy)
    if loaded is None or (loaded == _full() and not ctx.quarantined):
        COUNTS["damaged but legal files loaded"] += loaded is not None
        return
    assert policy == "quarantine", "a corrupt file was accepted"
    case.moved_aside(ctx)
    assert loaded == fallback
    storage.commit([{"n": 9}], _document({"upto": 9}), {})  # and it goes on from there
    _document_loaded, records = FileTokenStorage(ctx).load(normalize)
    assert {"n": 9} in records


def _log_case(template: Path, work: Path, content: bytes | None, at: int, policy: str) -> None:
    """The previous format's log, damaged."""
    case = Case(template, work, LOG_FILE, content)
    storage, ctx, loaded = _open(case, policy)
    if loaded is None:
        return
    if storage.torn_tail or (content is not None and not ctx.quarantined):
        # in the last line (no valid line follows): the batches before it load, its bytes kept
        assert content is not None and content[at + 1 :].count(b"\n") <= 1, "valid lines follow"
        whole = content[:at].count(b"\n")
        start = len(b"".join(content.split(b"\n")[:whole])) + whole
        assert loaded == _full(whole, PREVIOUS), f"not the first {whole} batches"
        assert storage.torn_tail == content[start:] and not ctx.quarantined
        if not storage.torn_tail:
            COUNTS["logs cut at a line boundary (an earlier state)"] += whole < len(BATCHES)
            COUNTS["damaged but legal files loaded"] += whole == len(BATCHES)
            return
        storage.loaded(_document({"upto": 9}), {})
        storage.commit([{"n": 9}], _document({"upto": 9}), {})
        assert storage.checkpoint()  # the upgrade: the log goes, its tail kept first
        torn = case.path.with_name(f"{LOG_FILE}.torn")
        assert torn.read_bytes() == content[start:], "the unreadable tail was not kept"
        assert not case.path.exists()
        COUNTS["unreadable log tails kept aside"] += 1
        return
    assert policy == "quarantine", "a corrupt log was accepted"
    case.moved_aside(ctx)
    assert loaded == (PREVIOUS, [], ARCHIVED), "not started from the checkpoint"


@pytest.mark.parametrize("policy", POLICIES)
def test_every_damage_to_the_token_document(template: Path, tmp_path: Path, policy: str) -> None:
    good = (template / TOKENS_FILE).read_bytes()
    cases = [(n, c) for n, c, _at in damages(good)] + list(BAD_DOCUMENTS.items())
    fallback: Loaded = (None, _full()[1], ARCHIVED)  # no checkpoint: its log alone
    for _name, content in cases:
        _whole_file_case(template, tmp_path / "w", TOKENS_FILE, content, policy, fallback)
    COUNTS["bad files tried"] += len(cases)


@pytest.mark.parametrize("policy", POLICIES)
def test_every_damage_to_the_token_log_segment(template: Path, tmp_path: Path, policy: str) -> None:
    wal = template / TOKENS_DIR / "wal"
    (segment,) = [p for p in wal.iterdir() if p.stat().st_size]
    good = segment.read_bytes()
    cases = [content for _n, content, _at in damages(good)]
    prefixes = [_full(n) for n in range(len(BATCHES) + 1)]
    for content in cases:
        case = Case(template, tmp_path / "w", str(segment.relative_to(template)), content)
        storage, ctx, loaded = _open(case, policy)
        if loaded is None:
            continue  # refused naming the segment, nothing changed (checked)
        if ctx.quarantined:  # the whole log aside: started from the checkpoint
            assert policy == "quarantine"
            assert [q.path for q in ctx.quarantined] == [str(storage.logged.wal_dir)]
            assert loaded == (DOCUMENT, [], ARCHIVED), "not started from the checkpoint"
            COUNTS["bad files quarantined"] += 1
            continue
        # an unfinished last append (no sound record after it): the batches before it
        assert loaded in prefixes, "not the first batches"
        COUNTS["unreadable log tails kept aside"] += loaded != _full()
    COUNTS["bad files tried"] += len(cases)


@pytest.mark.parametrize("policy", POLICIES)
def test_every_damage_to_the_previous_token_log(
    previous: Path, tmp_path: Path, policy: str
) -> None:
    template = previous
    good = (template / LOG_FILE).read_bytes()
    cases: list[tuple[bytes | None, int]] = [(c, at) for _n, c, at in damages(good)]
    cases += [(bad + good, 0) for bad in BAD_LINES.values()]  # valid lines follow: corrupt
    cases += [(good + bad, len(good)) for bad in BAD_LINES.values()]  # the last line
    cases += [(None, 0)]
    for content, at in cases:
        _log_case(template, tmp_path / "w", content, at, policy)
    COUNTS["bad files tried"] += len(cases)


@pytest.mark.parametrize("policy", POLICIES)
def test_every_damage_to_an_archive_month(template: Path, tmp_path: Path, policy: str) -> None:
    target = f"{ARCHIVE_DIR}/{MONTH}.json"
    good = (template / target).read_bytes()
    cases: list[tuple[str, bytes | None]] = [(n, c) for n, c, _at in damages(good)]
    cases += [(n, c) for n, c in BAD_DOCUMENTS.items() if n != "wrong shape"]
    cases += [("no daily_usage", seal_document(b'{"daily":{}}'))]
    fallback: Loaded = (*_full()[:2], None)
    for _name, content in cases:
        _whole_file_case(template, tmp_path / "w", target, content, policy, fallback)
    COUNTS["bad files tried"] += len(cases)


FLIPPED = ("_manifest.json", "_manifest.log", "token_usage.json", "token_usage.log")


async def _filled(data: Path) -> None:
    async with open_runtime(data) as rt:
        for n in range(3):  # a manifest base, then log lines: a checkpoint each
            await rt.state.store("c", f"k{n}", {"n": n})
            await rt.patterns.observe("t", f"p{n}", 0.5)
            await rt.tokens.record("anthropic", n, 1, 0.01, request_id=f"r{n}")
            await rt.checkpoint()


def _files(data: Path) -> list[Path]:
    found = [p for p in data.rglob("*") if p.name in FLIPPED]
    found += [p for p in (data / "marcus_state" / "_shards").rglob("*.json")]
    return sorted(found)


@pytest.mark.anyio
@pytest.mark.parametrize("policy", POLICIES)
async def test_the_runtime_refuses_or_quarantines_each_file(tmp_path: Path, policy: str) -> None:
    """A bit flipped mid-file in each of our files, through ``open_runtime``."""
    template = tmp_path / "template"
    await _filled(template)
    files = _files(template)
    # the patterns and state shard stores (base and log; their write-ahead logs are
    # empty after a close), the token document (its log is empty too), one state shard
    assert sorted(
        str(p.relative_to(template))
        for p in files
        if p.suffix != ".json" or "_shards" not in p.parts
    ) == [
        "learned_patterns/_manifest.json",
        "learned_patterns/_manifest.log",
        "marcus_state/_manifest.json",
        "marcus_state/_manifest.log",
        "token_usage.json",
    ]
    assert len(files) == 6
    for path in files:
        good = path.read_bytes()
        at = len(good) // 4  # in a log: in its first line, so a valid line follows
        content = good[:at] + bytes([good[at] ^ 4]) + good[at + 1 :]
        case = Case(template, tmp_path / "w", str(path.relative_to(template)), content)

        async def start(case: Case = case) -> Any:
            async with open_runtime(case.work, on_corrupt=policy) as rt:
                try:  # a shard loads on demand: its damage shows when it is read
                    await rt.state.retrieve("c", "k0")
                except CorruptDataError as exc:
                    return exc
                return rt.quarantined

        try:
            outcome = await start()
        except CorruptDataError as exc:  # at startup
            outcome = exc
        if isinstance(outcome, CorruptDataError):
            assert policy == "error" and outcome.path == str(case.path), outcome
            assert snapshot(case.work) == case.before
            COUNTS["bad files refused"] += 1
        else:
            assert policy == "quarantine" and str(case.path) in {q.path for q in outcome}
            COUNTS["bad files quarantined"] += 1
        COUNTS["bad files tried"] += 1


@pytest.mark.anyio
async def test_stale_temp_files_are_removed_and_data_kept(tmp_path: Path) -> None:
    data = tmp_path / "data"
    await _filled(data)
    live = {p: p.read_bytes() for p in _files(data)}
    stale = [p.with_name(f"{p.name}.tmp-0123456789ab") for p in live]
    for path in stale:
        path.write_bytes(b'{"half a commit')
    async with open_runtime(data) as rt:
        assert await rt.state.retrieve("c", "k2") is not None
        assert len(await rt.patterns.find(limit=None)) == 3
        assert (await rt.tokens.by_provider())["anthropic"]["requests"] == 3
    assert not any(p.exists() for p in stale)
    assert {p: p.read_bytes() for p in live} == live
    COUNTS["bad files tried"] += len(stale)
