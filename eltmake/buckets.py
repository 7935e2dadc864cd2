"""Buckets: the few object-storage primitives the shared store needs, on S3, GCS and a folder.

:mod:`eltmake.store_objects` builds state, leases, records and history from these alone, so the
guarantees live in one place and each platform only answers "read with a version tag", "write if
the tag still matches" (or "if absent") and "list by name". The tag is S3's ETag, GCS's object
generation, and for a folder a digest of the content compared under a lock.

The clients (s3fs, gcsfs) are imported when a bucket is opened, never at start-up, and every
failure of theirs becomes one :class:`StoreError` line naming the store URL and what to check.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from eltmake.store import StoreError, redact_url

CREATE = "*"  # a write's `match` that only creates: the object must not exist yet
CONNECT_TIMEOUT_S = 5  # an unreachable endpoint is reported in seconds, not minutes


class Conflict(Exception):
    """A conditional write lost: the object changed, appeared or went since it was read."""


class Bucket:
    """One store's objects: keys are relative to the store URL's prefix."""

    def __init__(self, url: str):
        self.url = redact_url(url)

    def read(self, key: str) -> tuple[bytes, str] | None:
        """The content and its version tag, or None when absent."""
        raise NotImplementedError

    def write(self, key: str, data: bytes, match: str | None = None) -> str:
        """Publish ``data`` whole (readers see the old or the new object, never part); with
        ``match`` only if the object still has that tag (:data:`CREATE`: is still absent), else
        :class:`Conflict`. Returns the new tag."""
        raise NotImplementedError

    def delete(self, key: str) -> None:
        raise NotImplementedError

    def listing(self, prefix: str, limit: int | None = None) -> list[tuple[str, int, float]]:
        """(name, size, modified time) of the objects directly in the folder ``prefix`` ("" or
        ending in "/"), by name; at most ``limit`` of them."""
        raise NotImplementedError

    def read_many(self, keys: list[str]) -> dict[str, bytes]:
        """Several objects at once (concurrent requests); absent ones are left out."""
        return {k: got[0] for k in keys if (got := self.read(k)) is not None}

    def exists(self, key: str) -> bool:
        raise NotImplementedError

    def upload(self, key: str, source: Path) -> None:
        raise NotImplementedError

    def download(self, key: str, dest: Path) -> bool:
        raise NotImplementedError

    def probe(self) -> None:
        """One cheap round trip, so a wrong bucket, credential or endpoint is one line when the
        store opens, before any step runs."""
        self.listing("", limit=1)

    def fail(self, what: str) -> StoreError:
        return StoreError(f"store {self.url}: {what}")


def open_bucket(url: str, environ: dict[str, str]) -> Bucket:
    parts = urlsplit(url)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise StoreError(f"store {url}: a folder store is file:///absolute/path")
        return FolderBucket(url, Path(unquote(parts.path)))
    if parts.scheme in ("s3", "gs", "gcs") and "@" in parts.netloc:
        raise StoreError(
            f"store {redact_url(url)}: put credentials in the environment or .env "
            "(AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, GOOGLE_APPLICATION_CREDENTIALS), not "
            "in the store URL"
        )
    if parts.scheme in ("s3", "gs", "gcs"):
        if not parts.netloc:
            raise StoreError(
                f"store {redact_url(url)}: no bucket; use {parts.scheme}://BUCKET/prefix"
            )
        from eltmake.buckets_cloud import GcsBucket, S3Bucket

        cls: Callable[..., Bucket] = S3Bucket if parts.scheme == "s3" else GcsBucket
        return cls(url, parts.netloc, parts.path.strip("/"), environ)
    raise StoreError(
        f"store {redact_url(url)}: unknown scheme {parts.scheme!r}; use postgresql://…, "
        "s3://bucket/prefix, gs://bucket/prefix or file:///path"
    )


# --- a shared folder (file://): a lock file and atomic renames ----------------------------------

_PROCESS_LOCKS: dict[str, threading.Lock] = {}  # flock on NFS is per process: threads need one too
_PROCESS_LOCKS_GUARD = threading.Lock()


class FolderBucket(Bucket):
    """Objects as files under one folder. A write goes to a temporary file that is renamed into
    place (atomic on one file system); a conditional write compares the content's digest with
    what the writer read, under an exclusive ``fcntl`` lock on ``.lock`` held for that instant."""

    def __init__(self, url: str, root: Path):
        super().__init__(url)
        self.root = root
        with _PROCESS_LOCKS_GUARD:
            self._thread_lock = _PROCESS_LOCKS.setdefault(str(root), threading.Lock())

    def probe(self) -> None:
        if not self.root.is_dir():
            raise self.fail(
                f"folder {self.root} does not exist; create it (mkdir -p {self.root}), and for a "
                "store shared by several machines check that the share is mounted"
            )
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise self.fail(f"folder {self.root} is not writable by this user")

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with self._thread_lock, open(self.root / ".lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    @staticmethod
    def _tag(data: bytes) -> str:
        return hashlib.blake2b(data, digest_size=16).hexdigest()

    def read(self, key: str) -> tuple[bytes, str] | None:
        try:
            data = (self.root / key).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as e:
            raise self.fail(f"cannot read {key}: {e}") from None
        return data, self._tag(data)

    def _publish(self, path: Path, fill: Callable[[Any], None]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            with open(tmp, "wb") as f:
                fill(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def write(self, key: str, data: bytes, match: str | None = None) -> str:
        path = self.root / key
        try:
            if match is None:
                self._publish(path, lambda f: f.write(data))
                return self._tag(data)
            with self._locked():
                now = self.read(key)
                if (now is None) != (match == CREATE) or (now is not None and now[1] != match):
                    raise Conflict(key)
                self._publish(path, lambda f: f.write(data))
        except OSError as e:
            raise self.fail(f"cannot write {key}: {e}") from None
        return self._tag(data)

    def delete(self, key: str) -> None:
        try:
            with self._locked():
                (self.root / key).unlink(missing_ok=True)
        except OSError as e:
            raise self.fail(f"cannot delete {key}: {e}") from None

    def listing(self, prefix: str, limit: int | None = None) -> list[tuple[str, int, float]]:
        try:
            entries = list(os.scandir(self.root / prefix))
        except FileNotFoundError:
            return []
        except OSError as e:
            raise self.fail(f"cannot list {prefix or '.'}: {e}") from None
        out = []
        for e in sorted(entries, key=lambda e: e.name):
            if e.name.startswith(".") or not e.is_file():
                continue
            st = e.stat()
            out.append((e.name, st.st_size, st.st_mtime))
            if limit and len(out) >= limit:
                break
        return out

    def exists(self, key: str) -> bool:
        return (self.root / key).is_file()

    def upload(self, key: str, source: Path) -> None:
        try:
            with open(source, "rb") as src:
                self._publish(self.root / key, lambda f: shutil.copyfileobj(src, f))
        except OSError as e:
            raise self.fail(f"cannot write {key}: {e}") from None

    def download(self, key: str, dest: Path) -> bool:
        try:
            shutil.copyfile(self.root / key, dest)
        except FileNotFoundError:
            return False
        except OSError as e:
            raise self.fail(f"cannot read {key}: {e}") from None
        return True


def load_json(data: bytes | None) -> Any:
    """An object's JSON, or None when absent or damaged (the caller treats both as empty)."""
    import json

    try:
        return json.loads(data) if data is not None else None
    except ValueError:
        return None


def dump_json(value: Any) -> bytes:
    import json

    return json.dumps(value, separators=(",", ":")).encode()
