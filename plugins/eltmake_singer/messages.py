"""Checking and fingerprinting the Singer messages that flow from a tap to a target.

This sits on the hot path of every extract-load (a million records is ~250 MB), on a machine
whose cores are already busy running the tap and the target, so it does as little per record as
the checks and the fingerprint need:

* Data arrives in large blocks of whole lines. A block whose every line is a ``RECORD`` of one
  stream written in the usual compact form (``{"type":"RECORD","stream":"orders",...}``, as
  written by the Singer SDK and by singer-python) whose schema was seen, that is valid UTF-8 and
  whose lines each end with ``}``, is checked and hashed with a few C-speed calls for the whole
  block, without a Python loop over its lines (the *fast path*).
* Any other block (a ``SCHEMA`` or ``STATE`` line in it, two streams, another spelling, a bad
  line) goes line by line (the *slow path*): lines in the usual form get the same cheap checks,
  all other lines are parsed fully with orjson. Both paths produce the same counts and the same
  fingerprint for the same lines; the tests hold them to that.

What is checked (a failure is a :class:`BadOutput` naming the line number): non-UTF-8 bytes, a
line that is not JSON (for ``RECORD`` lines in the usual form, the cheap check is the prefix and
the closing brace: a malformed record that passes it is reported by the target), a message that
is not an object or has no ``type``, a ``RECORD`` before its stream's ``SCHEMA``, and a line
longer than the limit.

The fingerprint, per stream, is a SHA-256 digest of its ``RECORD`` lines in the order they were
delivered, after removing the envelope's trailing ``time_extracted`` and ``version`` keys (noise
that changes on every run). It is order-dependent within a stream on purpose: taps read in a
stable order (files, a replication key), and a multiset hash would cost a Python call per record.
A tap that reorders its rows between runs only costs a missed early cutoff, never a wrong skip.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

# The usual compact spellings of a record's envelope: Singer SDK (orjson) and singer-python.
PREFIXES = (b'{"type":"RECORD","stream":"', b'{"type": "RECORD", "stream": "')
# Envelope keys that end a RECORD line and change on every run: ``time_extracted`` and the
# activate-version ``version``, in both spellings. One regex each, with a literal prefix so that
# re finds candidates fast, anchored on the line's closing "}\n" (cheaper than re.M's "$"); no
# pattern can cross a newline, so a block and its lines one by one clean the same way.
_NOISE_VALUES = ((b"time_extracted", rb'"[^"\n]*"'), (b"version", rb"-?\d+"))
# (compact, spaced) spellings, matching PREFIXES: [(marker, pattern), ...] each.
_NOISE = tuple(
    [
        (m, re.compile(re.escape(m) + value + rb"\}\n"))
        for key, value in _NOISE_VALUES
        for m in [(b',"%s":' if compact else b', "%s": ') % key]
    ]
    for compact in (True, False)
)
DEFAULT_MAX_LINE = 16 * 1024 * 1024


class BadOutput(Exception):
    """A tool wrote something that is not a valid Singer message.

    ``line_no`` is 1-based over the tool's whole output; ``valid`` is the part of the block before
    the bad line (safe to forward to the target, so that what came before is not lost).
    """

    def __init__(self, line_no: int, message: str, valid: bytes = b""):
        super().__init__(f"line {line_no}: {message}")
        self.line_no = line_no
        self.message = message
        self.valid = valid


def clean_records(data: bytes, spelling: int | None = None) -> tuple[bytes, int]:
    """Newline-ended RECORD lines without their trailing envelope noise, and how many lost a
    time stamp.

    ``spelling`` is the index in :data:`PREFIXES` of the lines' envelope (only that spelling's
    noise is looked for: each search is a pass over the data), or None for both. The count lets
    the fast path skip checking each line's closing brace: a line that matched ends with ``}``.
    """
    stamped = 0
    for noise in _NOISE if spelling is None else (_NOISE[spelling],):
        for i, (marker, pattern) in enumerate(noise):
            if marker in data:
                data, k = pattern.subn(b"}\n", data)
                if i == 0:
                    stamped += k
    return data, stamped


class MessageScanner:
    """Checks blocks of a tap's output and keeps per-stream counts and record digests.

    :meth:`feed` takes any bytes read from the tap and returns the whole lines to forward to the
    target; :meth:`finish` handles a last line without a newline. Memory is bounded by the block
    size plus ``max_line`` (a longer partial line is refused as soon as it is seen).
    """

    def __init__(self, max_line: int = DEFAULT_MAX_LINE):
        self.max_line = max_line
        self.line_no = 0  # lines completed so far
        self.counts: dict[str, int] = {}
        self.schemas: set[str] = set()
        self.bytes = 0
        self.fast_blocks = 0
        self.slow_blocks = 0
        self._hashes: dict[str, Any] = {}
        self._rest_parts: list[bytes] = []
        self._rest_len = 0

    # --- public ------------------------------------------------------------------------------

    def feed(self, data: bytes) -> bytes:
        """Check the complete lines in ``rest + data``; return them (the bytes to forward)."""
        if b"\n" not in data:  # a long line in the making: collect, do not re-copy each time
            self._rest_parts.append(data)
            self._rest_len += len(data)
            self._check_rest(b"")
            return b""
        if self._rest_parts:
            data = b"".join(self._rest_parts) + data
            self._rest_parts, self._rest_len = [], 0
        cut = data.rfind(b"\n") + 1
        block, rest = data[:cut], data[cut:]
        self.bytes += len(block)
        out = block if self._fast(block) else self._slow(block)
        if rest:
            self._rest_parts, self._rest_len = [rest], len(rest)
            self._check_rest(out)
        return out

    def finish(self) -> bytes:
        """End of output: a last line without a newline is checked and returned with one."""
        rest = b"".join(self._rest_parts)
        self._rest_parts, self._rest_len = [], 0
        if not rest.strip():
            return b""
        return self.feed(rest + b"\n")

    @property
    def pending(self) -> bytes:
        """A partial last line received so far (for diagnosing a crash mid-line)."""
        return b"".join(self._rest_parts)

    def stream_digests(self) -> dict[str, str]:
        return {s: h.hexdigest() for s, h in self._hashes.items()}

    @property
    def records(self) -> int:
        return sum(self.counts.values())

    # --- the two paths -----------------------------------------------------------------------

    def _check_rest(self, valid: bytes) -> None:
        """Refuse a partial line past the limit now, rather than buffer it to the end."""
        if self._rest_len > self.max_line:
            raise BadOutput(
                self.line_no + 1,
                f"line longer than the limit of {self.max_line} bytes (max_line_bytes)",
                valid,
            )

    def _fast(self, block: bytes) -> bool:
        """Handle a block of same-stream RECORD lines in one go; False to take the slow path."""
        n = block.count(b"\n")
        if len(block) > self.max_line:  # could hold an over-long line: check line by line
            return False
        for spelling, prefix in enumerate(PREFIXES):
            if not block.startswith(prefix):
                continue
            end = block.find(b'"', len(prefix))
            if end < 0:
                return False
            stream_b = block[len(prefix) : end]
            if b"\\" in stream_b:
                return False
            head = prefix + stream_b + b'"'
            if block.count(b"\n" + head) != n - 1:  # every line: a RECORD of this stream
                return False
            if not block.isascii():
                try:
                    block.decode("utf-8")
                except UnicodeDecodeError:
                    return False
            stream = stream_b.decode()
            if stream not in self.schemas:
                return False
            cleaned, stamped = clean_records(block, spelling)
            if stamped != n and block.count(b"}\n") != n:  # not every line ends with a brace
                return False
            self._hash(stream).update(cleaned)
            self.counts[stream] = self.counts.get(stream, 0) + n
            self.line_no += n
            self.fast_blocks += 1
            return True
        return False

    def _slow(self, block: bytes) -> bytes:
        """Check line by line; return the lines to forward (blank lines are dropped).

        After each line that is not a RECORD (a SCHEMA, a STATE), the rest of the block is
        offered to the fast path again, so one SCHEMA line does not slow down a whole block.
        """
        self.slow_blocks += 1
        kept: list[bytes] = []
        pending: dict[str, list[bytes]] = {}
        pos, size = 0, len(block)
        try:
            while pos < size:
                nl = block.index(b"\n", pos)
                line = block[pos:nl]
                pos = nl + 1
                self.line_no += 1
                stream, spelling = self._check_line(line)
                if stream is _BLANK:
                    continue
                kept.append(line)
                if stream is not None:
                    cleaned = clean_records(line + b"\n", spelling)[0]
                    pending.setdefault(stream, []).append(cleaned)
                elif size - pos > 4096:
                    self._flush(pending)
                    rest = block[pos:]
                    if self._fast(rest):
                        kept.append(rest[:-1])
                        break
        except BadOutput as exc:
            exc.valid = b"\n".join(kept) + b"\n" if kept else b""
            raise
        finally:
            self._flush(pending)
        return b"\n".join(kept) + b"\n" if kept else b""

    def _flush(self, pending: dict[str, list[bytes]]) -> None:
        for stream, recs in pending.items():
            self._hash(stream).update(b"".join(recs))
            self.counts[stream] = self.counts.get(stream, 0) + len(recs)
        pending.clear()

    def _check_line(self, line: bytes) -> tuple[Any, int | None]:
        """(stream, spelling) of a RECORD line, (None, None) for another message, and
        (_BLANK, None) for an empty line. ``spelling`` indexes PREFIXES, None when parsed."""
        if len(line) > self.max_line:
            raise BadOutput(
                self.line_no,
                f"line of {len(line)} bytes is longer than the limit of {self.max_line} "
                "(max_line_bytes)",
            )
        if not line.isascii():
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as e:
                raise BadOutput(
                    self.line_no, f"not UTF-8 (byte {line[e.start]:#04x} at column {e.start + 1})"
                ) from None
        for spelling, prefix in enumerate(PREFIXES):
            if line.startswith(prefix):
                end = line.find(b'"', len(prefix))
                stream_b = line[len(prefix) : end] if end > 0 else b"\\"
                if b"\\" not in stream_b and line.endswith(b"}"):
                    return self._record_stream(stream_b.decode()), spelling
                break
        if not line.strip():
            return _BLANK, None
        # Imported here, not at the top: orjson imports uuid and platform (~8 ms), and the module
        # is loaded before the tap starts; the first SCHEMA line comes once the tap runs.
        import orjson

        try:
            msg = orjson.loads(line)
        except orjson.JSONDecodeError as e:
            shown = line[:80].decode("utf-8", "replace")
            raise BadOutput(self.line_no, f"not valid JSON ({e}): {shown!r}") from None
        if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
            raise BadOutput(self.line_no, "not a Singer message (a JSON object with a 'type')")
        kind = msg["type"]
        if kind == "RECORD":
            stream = msg.get("stream")
            if not isinstance(stream, str) or not isinstance(msg.get("record"), dict):
                raise BadOutput(self.line_no, "RECORD message without a 'stream' or 'record'")
            return self._record_stream(stream), None
        if kind == "SCHEMA":
            stream = msg.get("stream")
            if not isinstance(stream, str) or not isinstance(msg.get("schema"), dict):
                raise BadOutput(self.line_no, "SCHEMA message without a 'stream' or 'schema'")
            self.schemas.add(stream)
        return None, None

    def _record_stream(self, stream: str) -> str:
        if stream not in self.schemas:
            raise BadOutput(self.line_no, f"RECORD for stream {stream!r} before its SCHEMA")
        return stream

    def _hash(self, stream: str) -> Any:
        h = self._hashes.get(stream)
        if h is None:
            h = self._hashes[stream] = hashlib.sha256()
        return h


_BLANK = object()
