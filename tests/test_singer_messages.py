"""The message scanner: checks, counts and fingerprints, the same on the fast and slow paths."""

from __future__ import annotations

import json
import random

import pytest
from eltmake_singer.messages import BadOutput, MessageScanner


def schema(stream: str, compact: bool = True) -> bytes:
    msg = {
        "type": "SCHEMA",
        "stream": stream,
        "schema": {"properties": {"id": {}}},
        "key_properties": ["id"],
    }
    return _dump(msg, compact)


def record(
    stream: str,
    i: int,
    ts: str = "2026-01-01T00:00:00.123456+00:00",
    compact: bool = True,
    version: int | None = None,
) -> bytes:
    msg: dict = {
        "type": "RECORD",
        "stream": stream,
        "record": {"id": i, "name": f"n{i}", "note": "é" * (i % 3)},
    }
    if version is not None:
        msg["version"] = version
    msg["time_extracted"] = ts
    return _dump(msg, compact)


def state(n: int) -> bytes:
    return _dump({"type": "STATE", "value": {"bookmarks": {"a": {"n": n}}}}, True)


def _dump(msg: dict, compact: bool) -> bytes:
    if compact:
        return json.dumps(msg, separators=(",", ":"), ensure_ascii=False).encode()
    return json.dumps(msg).encode()  # singer-python's spelling


def stream_of(lines: list[bytes]) -> bytes:
    return b"".join(line + b"\n" for line in lines)


def scan(
    data: bytes, sizes: list[int] | None = None, max_line: int = 1 << 20
) -> tuple[MessageScanner, bytes]:
    sc = MessageScanner(max_line)
    out = []
    pos = 0
    rng = random.Random(7)
    while pos < len(data):
        n = sizes.pop(0) if sizes else rng.randint(1, 5000)
        out.append(sc.feed(data[pos : pos + n]))
        pos += n
    out.append(sc.finish())
    return sc, b"".join(out)


def sample(compact: bool = True, ts: str = "2026-01-01T00:00:00.1+00:00") -> bytes:
    """Streams one after the other (as taps sync them), then interleaved, with states."""
    lines = [schema("a", compact), schema("b", compact)]
    for i in range(3000):
        stream = "a" if i < 2000 else "b" if i < 2800 else "ab"[i % 2]
        lines.append(record(stream, i, ts=ts, compact=compact))
        if i % 1000 == 999:
            lines.append(state(i))
    return stream_of(lines)


def test_counts_and_forwarding_are_exact_whatever_the_chunking():
    data = sample()
    whole, out_whole = scan(data, sizes=[len(data)])
    assert out_whole == data
    assert whole.counts == {"a": 2100, "b": 900}
    for seed in range(5):
        rng = random.Random(seed)
        sizes = [rng.choice([1, 13, 700, 4096, 65536]) for _ in range(len(data))]
        sc, out = scan(data, sizes=sizes)
        assert out == data
        assert sc.counts == whole.counts
        assert sc.stream_digests() == whole.stream_digests()
        assert sc.line_no == data.count(b"\n")


def test_fast_and_slow_paths_agree():
    data = sample()
    fast, out = scan(data, sizes=[65536] * 100)
    slow = MessageScanner()
    slow._fast = lambda block: False  # every block line by line
    assert slow.feed(data) == out == data
    assert fast.fast_blocks > 0 and slow.fast_blocks == 0
    assert fast.stream_digests() == slow.stream_digests()
    assert fast.counts == slow.counts


def test_envelope_noise_does_not_change_the_fingerprint():
    one, _ = scan(sample(ts="2026-01-01T00:00:00.1+00:00"))
    two, _ = scan(sample(ts="2027-05-05T11:11:11+00:00"))
    assert one.stream_digests() == two.stream_digests()
    versioned = stream_of([schema("a"), record("a", 1, version=111)])
    other_version = stream_of([schema("a"), record("a", 1, version=222)])
    assert scan(versioned)[0].stream_digests() == scan(other_version)[0].stream_digests()


def test_any_change_to_a_record_changes_the_fingerprint():
    base = scan(stream_of([schema("a"), record("a", 1), record("a", 2)]))[0].stream_digests()
    changed = scan(stream_of([schema("a"), record("a", 1), record("a", 3)]))[0].stream_digests()
    extra = scan(stream_of([schema("a"), record("a", 1), record("a", 2), record("a", 2)]))[0]
    assert base["a"] != changed["a"]
    assert base["a"] != extra.stream_digests()["a"]
    # A record field named like envelope noise is data, and counts.
    inner = b'{"type":"RECORD","stream":"a","record":{"id":1,"version":%d}}'
    v1 = scan(stream_of([schema("a"), inner % 1]))[0].stream_digests()
    v2 = scan(stream_of([schema("a"), inner % 2]))[0].stream_digests()
    assert v1 != v2


def test_singer_python_spelling_is_handled_too():
    data = sample(compact=False)
    sc, out = scan(data, sizes=[65536] * 100)
    assert out == data
    assert sc.counts == {"a": 2100, "b": 900}
    assert sc.fast_blocks > 0


@pytest.mark.parametrize(
    "bad, message",
    [
        (b"this is not json", "not valid JSON"),
        (b'{"type":"RECORD","stream":"a","record":{"id":', "not valid JSON"),
        (b"[1, 2]", "not a Singer message"),
        (b'{"type":"RECORD","stream":"zz","record":{"id":1}}', "before its SCHEMA"),
        (b'{"type":"RECORD","stream":"a","record":{"name":"\xff\xfe"}}', "not UTF-8"),
    ],
)
def test_bad_lines_name_their_line_number_and_keep_what_came_before(bad, message):
    good = [schema("a")] + [record("a", i) for i in range(500)]
    data = stream_of(good + [bad] + [record("a", 9999)])
    sc = MessageScanner()
    forwarded = b""
    with pytest.raises(BadOutput) as err:
        for i in range(0, len(data), 4096):
            forwarded += sc.feed(data[i : i + 4096])
        forwarded += sc.finish()
    assert err.value.line_no == len(good) + 1
    assert message in err.value.message
    forwarded += err.value.valid
    assert forwarded == stream_of(good)
    assert sc.counts == {"a": 500}


def test_a_line_over_the_limit_is_refused_without_buffering_it_all():
    sc = MessageScanner(max_line=1000)
    sc.feed(stream_of([schema("a")]))
    with pytest.raises(BadOutput) as err:
        for _ in range(100):
            sc.feed(b"x" * 100)  # no newline: a partial line that keeps growing
    assert err.value.line_no == 2
    assert "longer than the limit" in err.value.message
    assert len(sc.pending) <= 1100


def test_a_last_line_without_newline_is_checked_and_forwarded():
    data = stream_of([schema("a"), record("a", 1)]) + record("a", 2)
    sc, out = scan(data, sizes=[len(data)])
    assert out == data + b"\n"
    assert sc.counts == {"a": 2}


def test_blank_lines_are_dropped():
    data = stream_of([schema("a"), b"", record("a", 1), b"  "])
    sc, out = scan(data, sizes=[len(data)])
    assert out == stream_of([schema("a"), record("a", 1)])
    assert sc.counts == {"a": 1}


def test_complete_lines_before_an_over_long_partial_line_are_kept():
    sc = MessageScanner(max_line=1000)
    good = stream_of([schema("a"), record("a", 1)])
    with pytest.raises(BadOutput) as err:
        sc.feed(good + b"y" * 2000)
    assert err.value.valid == good
    assert err.value.line_no == 3
    assert sc.counts == {"a": 1}
