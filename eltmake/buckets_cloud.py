"""Buckets in the cloud: S3 (and S3-compatible services) through s3fs, Google Cloud Storage
through gcsfs, each imported only when such a store is opened (start-up speed matters, and they
are optional: ``eltmake[s3]``, ``eltmake[gcs]``).

Both answer :class:`eltmake.buckets.Bucket`'s primitives with the platform's own conditional
writes, and turn every failure of the client into one line naming the store URL.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from eltmake.buckets import CONNECT_TIMEOUT_S, CREATE, Bucket, Conflict
from eltmake.store import StoreError, redact_url


def _need(module: str, extra: str, url: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise StoreError(
            f"store {redact_url(url)}: needs the {module} package: pip install 'eltmake[{extra}]'"
        ) from None


class _Remote(Bucket):
    """What both clients share: fsspec's event loop, reads with their tag, many reads at once."""

    fs: Any

    @contextmanager
    def _errors(self, match: str | None = None) -> Iterator[None]:
        raise NotImplementedError
        yield

    async def _get(self, key: str) -> tuple[bytes, str] | None:
        raise NotImplementedError

    def _sync(self, fn: Callable[..., Any], *args: Any) -> Any:
        from fsspec.asyn import sync

        return sync(self.fs.loop, fn, *args)

    def read(self, key: str) -> tuple[bytes, str] | None:
        with self._errors():
            return self._sync(self._get, key)

    def read_many(self, keys: list[str]) -> dict[str, bytes]:
        async def gather() -> list[Any]:
            return await asyncio.gather(*(self._get(k) for k in keys))

        with self._errors():
            got = self._sync(gather) if keys else []
        return {k: g[0] for k, g in zip(keys, got, strict=True) if g is not None}


# --- S3 (and S3-compatible services) through s3fs -------------------------------------------------


def _code(e: BaseException) -> str:
    """The service's error code (NoSuchKey, PreconditionFailed, …) behind an s3fs error."""
    for err in (e, e.__cause__):
        response = getattr(err, "response", None)
        if isinstance(response, dict):
            return str(response.get("Error", {}).get("Code", ""))
    return ""


class S3Bucket(_Remote):
    """S3 through s3fs: a PUT publishes an object whole; ``IfNoneMatch="*"`` creates only,
    ``IfMatch=<etag>`` replaces only the version read (AWS since 2024-11, moto ≥ 5.0.x, MinIO)."""

    def __init__(self, url: str, bucket: str, prefix: str, environ: dict[str, str]):
        super().__init__(url)
        s3fs = _need("s3fs", "s3", url)
        self.bucket, self.prefix = bucket, prefix + "/" if prefix else ""
        self.endpoint = environ.get("AWS_ENDPOINT_URL_S3") or environ.get("AWS_ENDPOINT_URL")
        region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION")
        kwargs: dict[str, Any] = {
            "endpoint_url": self.endpoint,
            "key": environ.get("AWS_ACCESS_KEY_ID"),
            "secret": environ.get("AWS_SECRET_ACCESS_KEY"),
            "token": environ.get("AWS_SESSION_TOKEN"),
            "client_kwargs": {"region_name": region} if region else {},
            "config_kwargs": {
                "connect_timeout": CONNECT_TIMEOUT_S,
                "retries": {"max_attempts": 3, "mode": "standard"},
            },
            "skip_instance_cache": True,
            "use_listings_cache": False,
        }
        if environ.get("AWS_PROFILE") and not kwargs["key"]:
            kwargs["profile"] = environ["AWS_PROFILE"]
        self.fs = s3fs.S3FileSystem(**kwargs)

    def _path(self, key: str) -> str:
        return f"{self.bucket}/{self.prefix}{key}"

    @contextmanager
    def _errors(self, match: str | None = None) -> Iterator[None]:
        try:
            yield
        except (Conflict, StoreError):
            raise
        except Exception as e:
            code = _code(e)
            if code in ("PreconditionFailed", "ConditionalRequestConflict") or (
                code == "NoSuchKey" and match not in (None, CREATE)
            ):
                raise Conflict(code) from None
            raise self._explain(e, code) from None

    def _explain(self, e: BaseException, code: str) -> StoreError:
        where = f" at {self.endpoint}" if self.endpoint else ""
        if code == "NoSuchBucket":
            return self.fail(
                f"bucket {self.bucket!r} does not exist{where}; create it, or correct the store "
                "URL ([project] store or ELTMAKE_STORE)"
            )
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403") or (
            isinstance(e, PermissionError)
        ):
            return self.fail(
                f"access denied ({code or e}); check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                "(environment or .env) and that they may read and write this bucket"
            )
        name = type(e).__name__
        if name == "NoCredentialsError":
            return self.fail(
                "no credentials; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) "
                "in the environment or .env"
            )
        if "Connect" in name or "Timeout" in name or isinstance(e, ConnectionError | TimeoutError):
            return self.fail(
                f"cannot reach the endpoint{where or ' (AWS)'}: {e}; check AWS_ENDPOINT_URL and "
                "the network"
            )
        return self.fail(f"{name}: {e}".replace("\n", " "))

    async def _get(self, key: str) -> tuple[bytes, str] | None:
        try:
            resp = await self.fs._call_s3("get_object", Bucket=self.bucket, Key=self.prefix + key)
        except Exception as e:
            if _code(e) == "NoSuchKey":
                return None
            raise
        body = resp["Body"]
        try:
            return await body.read(), resp["ETag"]
        finally:
            body.close()

    def write(self, key: str, data: bytes, match: str | None = None) -> str:
        cond = (
            {} if match is None else {"IfNoneMatch": "*"} if match == CREATE else {"IfMatch": match}
        )
        with self._errors(match):
            out = self.fs.call_s3(
                "put_object", Bucket=self.bucket, Key=self.prefix + key, Body=data, **cond
            )
        return str(out.get("ETag", ""))

    def delete(self, key: str) -> None:
        with self._errors():
            self.fs.call_s3("delete_object", Bucket=self.bucket, Key=self.prefix + key)

    def listing(self, prefix: str, limit: int | None = None) -> list[tuple[str, int, float]]:
        out: list[tuple[str, int, float]] = []
        kw: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.prefix + prefix}
        kw["Delimiter"] = "/"
        with self._errors():
            while True:  # pages of at most 1,000 names
                if limit:
                    kw["MaxKeys"] = min(limit - len(out), 1000)
                page = self.fs.call_s3("list_objects_v2", **kw)
                for o in page.get("Contents", []):
                    name = o["Key"][len(kw["Prefix"]) :]
                    out.append((name, int(o["Size"]), o["LastModified"].timestamp()))
                if (limit and len(out) >= limit) or not page.get("IsTruncated"):
                    return out[:limit] if limit else out
                kw["ContinuationToken"] = page["NextContinuationToken"]

    def exists(self, key: str) -> bool:
        with self._errors():
            try:
                self.fs.call_s3("head_object", Bucket=self.bucket, Key=self.prefix + key)
            except FileNotFoundError:
                return False
        return True

    def upload(self, key: str, source: Path) -> None:
        with self._errors():
            self.fs.put_file(str(source), self._path(key))

    def download(self, key: str, dest: Path) -> bool:
        with self._errors():
            try:
                self.fs.get_file(self._path(key), str(dest))
            except FileNotFoundError:
                return False
        return True


# --- Google Cloud Storage through gcsfs ------------------------------------------------------------


class GcsBucket(_Remote):
    """GCS through gcsfs's authenticated session and the JSON API: an object's generation is its
    tag, ``ifGenerationMatch`` (0: absent) makes a write conditional."""

    def __init__(self, url: str, bucket: str, prefix: str, environ: dict[str, str]):
        super().__init__(url)
        _need("gcsfs", "gcs", url)
        # The plain client: gcsfs's default subclass first asks each bucket's type over gRPC.
        from gcsfs.core import GCSFileSystem

        self.bucket, self.prefix = bucket, prefix + "/" if prefix else ""
        self.endpoint = environ.get("STORAGE_EMULATOR_HOST")
        token = environ.get("GOOGLE_APPLICATION_CREDENTIALS") or ("anon" if self.endpoint else None)
        self.fs = GCSFileSystem(
            token=token, endpoint_url=self.endpoint, skip_instance_cache=True, requests_timeout=60
        )

    @contextmanager
    def _errors(self, match: str | None = None) -> Iterator[None]:
        try:
            yield
        except (Conflict, StoreError):
            raise
        except FileExistsError:  # gcsfs's answer to 412 Precondition Failed
            raise Conflict("generation") from None
        except FileNotFoundError:
            if match not in (None, CREATE):
                raise Conflict("gone") from None
            raise self.fail(
                f"bucket {self.bucket!r} does not exist; create it, or correct the store URL"
            ) from None
        except Exception as e:
            what = f"{type(e).__name__}: {e}".replace("\n", " ")
            if "403" in what or "401" in what or "Forbidden" in what:
                what += "; check GOOGLE_APPLICATION_CREDENTIALS (environment or .env)"
            raise self.fail(what) from None

    async def _get(self, key: str) -> tuple[bytes, str] | None:
        """The content and its generation, from the download's ``x-goog-generation`` header;
        a server that omits it (an emulator) is asked the generation first, then that one."""
        path, name = "b/{}/o/{}", self.prefix + key
        try:
            headers, data = await self.fs._call("GET", path, self.bucket, name, alt="media")
            if gen := headers.get("x-goog-generation"):
                return data, str(gen)
            meta = await self.fs._call("GET", path, self.bucket, name, json_out=True)
            gen = str(meta["generation"])
            _, data = await self.fs._call(
                "GET", path, self.bucket, name, alt="media", generation=gen
            )
            return data, gen
        except FileNotFoundError:
            return None

    def write(self, key: str, data: bytes, match: str | None = None) -> str:
        cond = {} if match is None else {"ifGenerationMatch": "0" if match == CREATE else match}
        with self._errors(match):
            out = self.fs.call(
                "POST",
                f"{self.fs._location}/upload/storage/v1/b/{self.bucket}/o",
                uploadType="media",
                name=self.prefix + key,
                data=data,
                json_out=True,
                **cond,
            )
        return str(out.get("generation", ""))

    def delete(self, key: str) -> None:
        with self._errors():
            try:
                self.fs.call("DELETE", "b/{}/o/{}", self.bucket, self.prefix + key)
            except FileNotFoundError:
                pass

    def listing(self, prefix: str, limit: int | None = None) -> list[tuple[str, int, float]]:
        out: list[tuple[str, int, float]] = []
        full, token = self.prefix + prefix, None
        with self._errors():
            while True:
                page = self.fs.call(
                    "GET", "b/{}/o", self.bucket, prefix=full, delimiter="/",
                    maxResults=limit and min(limit - len(out), 1000), pageToken=token,
                    json_out=True,
                )  # fmt: skip
                for o in page.get("items", []):
                    when = datetime.fromisoformat(o["updated"].replace("Z", "+00:00"))
                    out.append((o["name"][len(full) :], int(o["size"]), when.timestamp()))
                token = page.get("nextPageToken")
                if (limit and len(out) >= limit) or not token:
                    return sorted(out)[:limit] if limit else sorted(out)

    def exists(self, key: str) -> bool:
        with self._errors():
            try:
                self.fs.call("GET", "b/{}/o/{}", self.bucket, self.prefix + key, json_out=True)
            except FileNotFoundError:
                return False
        return True

    def upload(self, key: str, source: Path) -> None:
        with self._errors():
            self.fs.put_file(str(source), f"{self.bucket}/{self.prefix}{key}")

    def download(self, key: str, dest: Path) -> bool:
        with self._errors():
            if not self.exists(key):
                return False
            self.fs.get_file(f"{self.bucket}/{self.prefix}{key}", str(dest))
        return True
