"""Format 2 (checksums) of the file backend's own files, and reading format 1.

Format 1 is what earlier releases wrote: a plain ``_manifest.json`` with
``[version, count]`` entries, plain JSON log lines, a plain ``token_usage.json``.
It still loads, and the first commit after loading it writes format 2.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import pytest
from click.testing import CliRunner

from marcus_persist import CorruptDataError
from marcus_persist._core._fs import OS_FS
from marcus_persist.backends._files import FileContext
from marcus_persist.backends.file._sealed import (
    check_plain,
    seal_document,
    seal_line,
    unseal_document,
    unseal_line,
)
from marcus_persist.backends.file._shards import LOG, MANIFEST, ShardStore
from marcus_persist.backends.file._tokens import FileTokenStorage
from marcus_persist.cli._main import cli
from marcus_persist.ops.doctor import diagnose


def _ctx(root: Path, policy: str = "error") -> FileContext:
    return FileContext(root, OS_FS, False, policy)  # type: ignore[arg-type]


def _read(store: ShardStore) -> dict[str, dict[str, object]]:
    return {c: dict(store.iter(c)) for c in store.collections()}


class TestSeals:
    def test_a_line_round_trips_and_every_single_bit_flip_fails(self) -> None:
        line = seal_line(b'{"seq":1}')
        assert line.endswith(b"\n") and unseal_line(line[:-1]) == b'{"seq":1}'
        for i in range(len(line) - 1):
            for bit in range(8):
                flipped = bytearray(line[:-1])
                flipped[i] ^= 1 << bit
                with pytest.raises(ValueError):
                    unseal_line(bytes(flipped))

    def test_a_document_keeps_its_top_level_fields_readable(self) -> None:
        sealed = seal_document(b'{"project_tokens":{"p":5}}')
        assert json.loads(sealed)["project_tokens"] == {"p": 5}  # Marcus reads ours
        assert unseal_document(sealed) is True
        assert unseal_document(b'{"project_tokens":{"p":5}}') is False
        head = sealed[: sealed.index(b'"crc32"')]
        crc = b"%08x" % zlib.crc32(head)
        assert sealed.endswith(b'"crc32":"' + crc + b'"}')
        for i in range(len(sealed)):
            flipped = bytearray(sealed)
            flipped[i] ^= 1 << (i % 8)
            try:
                if not unseal_document(bytes(flipped)):
                    check_plain(json.loads(bytes(flipped)))
            except ValueError:  # json.JSONDecodeError is one too
                continue
            pytest.fail(f"a flip at {i} passed")


class TestFormat1:
    def test_a_format_1_shard_store_loads_and_is_upgraded(self, tmp_path: Path) -> None:
        root = tmp_path / "store"
        (root / "_shards" / "c").mkdir(parents=True)
        (root / "_shards" / "d").mkdir()
        (root / "_shards" / "c" / "0-0.2.json").write_bytes(b'{"k1":{"v":1},"k2":{"v":2}}')
        (root / "_shards" / "d" / "0-0.3.json").write_bytes(b'{"x":{"v":3}}')
        base = {"format": 1, "seq": 2, "meta": {"m": 1}, "collections": {"c": {"0-0": [2, 2]}}}
        (root / MANIFEST).write_text(json.dumps(base))
        old_log = b'{"seq":3,"collections":{"d":{"0-0":[3,1]}}}\n'
        (root / LOG).write_bytes(old_log)
        store = ShardStore(root, _ctx(tmp_path))
        store.open()
        expected = {"c": {"k1": {"v": 1}, "k2": {"v": 2}}, "d": {"x": {"v": 3}}}
        assert _read(store) == expected and store.meta == {"m": 1}
        store.commit({"e": {"y": {"v": 4}}})
        raw = (root / MANIFEST).read_bytes()
        assert raw.startswith(b'{"format":2,') and unseal_document(raw)
        assert not (root / LOG).exists()  # the upgrade was a checkpoint
        again = ShardStore(root, _ctx(tmp_path))
        again.open()
        assert _read(again) == {**expected, "e": {"y": {"v": 4}}}
        # the checkpoint's log removal failed: its plain lines are older than the base
        (root / LOG).write_bytes(old_log)
        again.open()
        assert _read(again) == {**expected, "e": {"y": {"v": 4}}}

    def test_a_plain_line_newer_than_a_format_2_base_is_corrupt(self, tmp_path: Path) -> None:
        store = ShardStore(tmp_path / "s", _ctx(tmp_path))
        store.open()
        store.commit({"c": {"k": {"v": 1}}})
        store.commit({"c": {"k": {"v": 2}}})
        log = tmp_path / "s" / LOG
        log.write_bytes(b'{"seq":99,"collections":{}}\n' + log.read_bytes())
        with pytest.raises(CorruptDataError, match="line 1"):
            ShardStore(tmp_path / "s", _ctx(tmp_path)).open()

    def test_format_1_tokens_load_and_are_upgraded(self, tmp_path: Path) -> None:
        (tmp_path / "token_usage.json").write_text(json.dumps({"upto": 1, "log_seq": 1}))
        (tmp_path / "token_usage.log").write_bytes(b'{"seq":2,"records":[{"n":2}]}\n')
        storage = FileTokenStorage(_ctx(tmp_path))
        assert storage.load(lambda d: d) == ({"upto": 1, "log_seq": 1}, [{"n": 2}])
        storage.loaded(lambda seen=None: {"upto": 2}, {})
        storage.commit([{"n": 3}], lambda seen=None: {"upto": 3}, {})  # onto the log
        assert (tmp_path / "token_usage.log").exists()  # until the first checkpoint
        assert storage.checkpoint()
        raw = (tmp_path / "token_usage.json").read_bytes()
        assert unseal_document(raw) and json.loads(raw)["upto"] == 3
        assert not (tmp_path / "token_usage.log").exists()
        storage.commit([{"n": 4}], lambda seen=None: {"upto": 4}, {})
        again = FileTokenStorage(_ctx(tmp_path))
        assert again.load(lambda d: d) == ({"upto": 3, "log_seq": 2, "wal_lsn": 1}, [{"n": 4}])


class TestUnreadableTails:
    """Unreadable lines at the end of a log are kept, reported by doctor, cut on repair."""

    def test_doctor_reports_and_repair_cuts_each_log_tail(self, tmp_path: Path) -> None:
        data = tmp_path / "data"
        store = ShardStore(data / "marcus_state", _ctx(data))
        store.open()
        store.commit({"c": {"k": {"v": 1}}})
        store.commit({"c": {"new": {"v": 2}}})  # a new shard version: the old one goes
        # token usage in the previous format: a document, then a log line
        record = {"type": "Record", "provider": "anthropic", "model": None, "input_tokens": 1}
        record |= {"output_tokens": 1, "cost_micros": 10, "project_id": None, "task_id": None}
        record |= {"at": "2026-01-05T10:00:00Z", "request_id": "r1"}
        (data / "token_usage.json").write_bytes(seal_document(b'{"log_seq":1}'))
        line = json.dumps({"seq": 2, "records": [record]}, separators=(",", ":")).encode()
        (data / "token_usage.log").write_bytes(seal_line(line))
        tails = {
            data / "marcus_state" / LOG: b"0badf00d {garbage}\n",
            data / "token_usage.log": b"x",
        }
        whole = {path: path.read_bytes() for path in tails}
        for path, tail in tails.items():
            path.write_bytes(whole[path] + tail)
        found = {f.path: f for f in diagnose(data)}
        for path, tail in tails.items():
            assert found[str(path)].severity == "warning" and f"{len(tail)} unreadable" in (
                found[str(path)].problem
            )
            assert path.read_bytes() == whole[path] + tail  # checking changes nothing
        result = CliRunner().invoke(cli, ["doctor", str(data), "--repair"])
        assert result.exit_code == 0, result.output
        for path, tail in tails.items():
            assert path.read_bytes() == whole[path]
            assert path.with_name(f"{path.name}.torn").read_bytes() == tail
        assert CliRunner().invoke(cli, ["doctor", str(data)]).exit_code == 0

    def test_a_store_whose_last_line_is_unreadable_keeps_the_shards_it_named(
        self, tmp_path: Path
    ) -> None:
        """A damaged last line that only added a shard looks like an unfinished append:
        the map goes back to the base, but the shard file it named is never deleted."""
        root = tmp_path / "s"
        store = ShardStore(root, _ctx(tmp_path))
        store.open()
        store.commit({"c": {"k": {"v": 1}}})  # the base
        store.commit({"d": {"x": {"v": 2}}})  # a log line naming a new shard only
        shard = root / "_shards" / "d" / "0-0.2.json"
        kept = shard.read_bytes()
        line = (root / LOG).read_bytes()
        (root / LOG).write_bytes(line[:20])
        again = ShardStore(root, _ctx(tmp_path))
        again.open()
        assert _read(again) == {"c": {"k": {"v": 1}}} and again.torn_tail == line[:20]
        again.commit({"c": {"k2": {"v": 3}}})  # its sweep used to delete d's shard
        assert not shard.exists()
        assert shard.with_name(f"{shard.name}.torn").read_bytes() == kept
        assert (root / f"{LOG}.torn").read_bytes() == line[:20]
