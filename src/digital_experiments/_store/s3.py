"""A store in an S3 bucket (or any S3-compatible server), through boto3.

boto3 (the ``s3`` extra) was chosen over obstore for two reasons, measured:

- **fork**: obstore runs its requests on a tokio runtime whose threads do not
  survive ``fork``; a worker of a fork-started pool (the default start method
  on Linux before Python 3.14) whose parent had used it hangs on its first
  request. boto3 is plain Python: each process builds its own client.
- **settings**: boto3 reads the standard AWS configuration exactly as the AWS
  CLI does (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``
  and ``~/.aws``, SSO, instance roles, ``AWS_REGION``, ``AWS_ENDPOINT_URL``).

It sends both conditions a record store needs: ``If-None-Match: *``
(create-only) and ``If-Match: <etag>`` (compare-and-swap). Plain ``http://``
endpoints (loopback servers) must be allowed with ``AWS_ALLOW_HTTP=true``, so
credentials are never sent in the clear by a typo.

Versions are ETags, which S3 computes as a digest of the bytes: rewriting the
same bytes brings an old version back. Whatever is created or swapped must
therefore be unique to its writer (leases carry a token and a nonce); then a
lost answer is settled by reading the object back.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from .base import Missing, Store, StoreError, checked

T = TypeVar("T")

SCHEME = "s3://"
READERS = 16  # parallel gets when reading many objects
ATTEMPTS = 3  # of one request: a lost answer is retried, then settled
_CONFLICTS = 5  # tries of a conditional write that S3 answered 409 (another in flight)
_CREDENTIALS = re.compile(
    r"SignatureDoesNotMatch|InvalidAccessKeyId|AccessDenied|Forbidden|^40[13]$"
)


def parse(url: str) -> tuple[str, str]:
    """``(bucket, prefix)`` of ``s3://bucket/prefix``.

    Raises
    ------
    ValueError
        If ``url`` names no valid bucket.
    """
    if not url.startswith(SCHEME):
        raise ValueError(f"{url!r} is not an s3:// URL such as 's3://bucket/prefix'.")
    bucket, _, prefix = url[len(SCHEME) :].partition("/")
    if not re.fullmatch(r"[a-z0-9][a-z0-9.\-_]{1,254}", bucket):
        raise ValueError(
            f"{url!r} names no valid bucket: write s3://<bucket>/<prefix>, with a bucket name "
            "of lower-case letters, digits, dots and hyphens."
        )
    return bucket, prefix.strip("/")


class S3Store(Store):
    """The objects under ``s3://bucket/prefix``.

    The client is built on first use in each process (and again after a
    ``fork``), so a store can be pickled to workers by its URL.
    """

    def __init__(self, url: str) -> None:
        bucket, prefix = parse(url)
        self.url = f"{SCHEME}{bucket}/{prefix}" if prefix else f"{SCHEME}{bucket}"
        self.bucket, self.prefix = bucket, prefix
        self._head = f"{prefix}/" if prefix else ""
        self._client: Any = None
        self._pid = 0
        self._lock = threading.Lock()

    @property
    def workdir(self) -> Path:
        """``$DE_CACHE/s3/<bucket>/<prefix>`` (default ``~/.cache/digital-experiments``):
        where runs stage their ``current_dir()`` and artefacts are downloaded."""
        return cache_home() / "s3" / self.bucket / self.prefix

    def __getstate__(self) -> dict[str, Any]:
        return {"url": self.url}  # the client is rebuilt where the store is unpickled

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["url"])  # type: ignore[misc]

    @property
    def client(self) -> Any:
        """This process's boto3 client (built once per process)."""
        if self._client is None or self._pid != os.getpid():
            with self._lock:
                if self._client is None or self._pid != os.getpid():
                    self._client, self._pid = _client(self.url), os.getpid()
        return self._client

    # -- the primitives

    def get(self, key: str) -> tuple[bytes, str]:
        found = self._call(
            key, lambda: self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        )
        return found["Body"].read(), str(found["ETag"])

    def version(self, key: str) -> str | None:
        try:
            meta = self._call(
                key, lambda: self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            )
        except Missing:
            return None
        return str(meta["ETag"])

    def age(self, key: str) -> float | None:
        # the server's own clock twice: its Date header, and the object's LastModified
        import email.utils  # on first use: imports stay light

        try:
            meta = self._call(
                key, lambda: self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            )
        except Missing:
            return None
        date = meta.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
        modified = meta.get("LastModified")
        if not date or modified is None:
            return None
        return float((email.utils.parsedate_to_datetime(date) - modified).total_seconds())

    def put_new(self, key: str, data: bytes) -> str | None:
        return self._conditional(key, data, IfNoneMatch="*")

    def put_if(self, key: str, data: bytes, version: str) -> str | None:
        return self._conditional(key, data, IfMatch=version)

    def put(self, key: str, data: bytes, *, sync: bool = True) -> str:
        found = self._call(
            key, lambda: self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        )
        return str(found["ETag"])

    def list(self, prefix: str = "", start_after: str | None = None) -> Iterator[str]:
        # S3 prefixes are plain string prefixes: "exp/2026" lists exp/2026*, one level
        for page in self._pages(prefix, start_after):
            for entry in page.get("Contents", ()):
                key = entry["Key"][len(self._head) :]
                if key and not key.endswith("/"):  # a server's folder marker is no object
                    yield key

    def versions(self, prefix: str = "") -> Iterator[tuple[str, str]]:
        for page in self._pages(prefix, None):
            for entry in page.get("Contents", ()):
                key = entry["Key"][len(self._head) :]
                if key and not key.endswith("/"):
                    yield key, str(entry["ETag"])

    def folders(self, prefix: str) -> Iterator[str]:
        names = set()
        for page in self._pages(prefix, None):
            for entry in page.get("CommonPrefixes", ()):
                names.add(entry["Prefix"][len(self._head) + len(prefix) :].rstrip("/"))
        yield from sorted(name for name in names if name)

    def delete(self, key: str) -> None:
        self._call(key, lambda: self.client.delete_object(Bucket=self.bucket, Key=self._key(key)))

    # -- beyond the primitives

    def copy(self, source: str, target: str) -> str:
        found = self._call(
            source,
            lambda: self.client.copy_object(
                Bucket=self.bucket,
                Key=self._key(target),
                CopySource={"Bucket": self.bucket, "Key": self._key(source)},
            ),
        )
        return str(found["CopyObjectResult"]["ETag"])

    def get_many(self, keys: Sequence[str]) -> Iterator[tuple[str, tuple[bytes, str] | None]]:
        """``(key, (bytes, version))`` for each of ``keys``, in order, fetched in
        parallel (``None`` for a key deleted since it was listed)."""
        if len(keys) < 2:
            yield from super().get_many(keys)
            return
        with ThreadPoolExecutor(min(READERS, len(keys))) as pool:
            yield from zip(keys, pool.map(self.get_or_none, keys), strict=True)

    def read_many(self, keys: Sequence[str]) -> Iterator[tuple[str, bytes | OSError]]:
        """``(key, bytes)`` for each of ``keys``, in order, fetched in parallel
        (``(key, Missing)`` for a key deleted since it was listed); a
        :class:`StoreError` raises."""
        if len(keys) < 2:
            yield from super().read_many(keys)
            return
        with ThreadPoolExecutor(min(READERS, len(keys))) as pool:
            yield from zip(keys, pool.map(self._read_or_missing, keys), strict=True)

    def _read_or_missing(self, key: str) -> bytes | OSError:
        try:
            return self.read(key)
        except Missing as missing:
            return missing

    def check(self) -> None:
        """Fail now, with the setting to fix, if the bucket cannot be read.

        One listing request of at most one key: it proves the endpoint answers,
        the credentials are accepted and the bucket exists.
        """
        self._call(
            "",
            lambda: self.client.list_objects_v2(Bucket=self.bucket, Prefix=self._head, MaxKeys=1),
        )

    # -- requests

    def _key(self, key: str) -> str:
        return self._head + checked(key)

    def _pages(self, prefix: str, start_after: str | None) -> Iterator[dict[str, Any]]:
        request: dict[str, Any] = {
            "Bucket": self.bucket,
            "Prefix": self._head + prefix,
            "Delimiter": "/",
        }
        if start_after is not None:
            request["StartAfter"] = self._head + start_after
        while True:
            page = self._call(prefix, lambda: self.client.list_objects_v2(**request))
            yield page
            if not page.get("IsTruncated"):
                return
            request["ContinuationToken"] = page["NextContinuationToken"]

    def _conditional(self, key: str, data: bytes, **condition: str) -> str | None:
        """A create-only or compare-and-swap put: its version, or ``None`` if refused.

        A refusal may be a retry's answer after the first try succeeded, and an
        error may hide a write that was made: both are settled by reading the
        object back (ours if it holds ``data``).
        """
        for _ in range(_CONFLICTS):
            try:
                found = self._call(
                    key,
                    lambda: self.client.put_object(
                        Bucket=self.bucket, Key=self._key(key), Body=data, **condition
                    ),
                    conditional=True,
                )
            except _Refused as refused:
                settled = self.settle_new(key, data)
                if settled is not None or not refused.conflict:
                    return settled
                continue  # 409: another conditional write was in flight; ask again
            except StoreError:
                settled = self.settle_new(key, data)  # the answer lost, the write perhaps made
                if settled is None:
                    raise
                return settled
            return str(found["ETag"])
        return self.settle_new(key, data)

    def _call(self, key: str, request: Callable[[], T], *, conditional: bool = False) -> T:
        """``request()``, with boto3's errors turned into :class:`Missing`, a refusal
        of a conditional write, or a short :class:`StoreError` naming the setting."""
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        try:
            return request()
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if conditional and (code in ("PreconditionFailed", "412") or status == 412):
                raise _Refused(conflict=False) from None
            if conditional and (code == "ConditionalRequestConflict" or status == 409):
                raise _Refused(conflict=True) from None
            if code in ("NoSuchKey", "404") or (status == 404 and code != "NoSuchBucket"):
                if conditional:  # If-Match on a key that is gone
                    raise _Refused(conflict=False) from None
                raise Missing(f"No object {key!r} in {self.url!r}.") from None
            raise StoreError(
                self._explain(code or str(status), str(error.get("Message", "")))
            ) from None
        except NoCredentialsError:
            raise StoreError(
                f"{self.url}: no AWS credentials found. Set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE."
            ) from None
        except BotoCoreError as exc:
            raise StoreError(self._unreachable(exc)) from None

    def _explain(self, code: str, message: str) -> str:
        endpoint = _endpoint()
        if code == "NoSuchBucket":
            return (
                f"{self.url}: the bucket {self.bucket!r} does not exist at {endpoint}. "
                "Create it, or fix the bucket in the URL (or AWS_ENDPOINT_URL)."
            )
        if _CREDENTIALS.search(code):
            return (
                f"{self.url}: {endpoint} refused the credentials ({code}). Check "
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), and that "
                f"they may read and write the bucket {self.bucket!r}."
            )
        detail = f"{code}: {message}" if message else code
        return (
            f"{self.url}: {endpoint} answered {detail[:200]}; check AWS_ENDPOINT_URL "
            "and AWS_REGION."
        )

    def _unreachable(self, exc: Exception) -> str:
        endpoint = _endpoint()
        hint = (
            ""
            if os.environ.get("AWS_ENDPOINT_URL")
            else " Set AWS_ENDPOINT_URL for an S3-compatible server."
        )
        return f"{self.url}: cannot reach {endpoint} ({type(exc).__name__}).{hint}"


class _Refused(Exception):
    """A conditional write the server refused (412), or could not decide yet (409)."""

    def __init__(self, conflict: bool) -> None:
        super().__init__("refused")
        self.conflict = conflict


def cache_home() -> Path:
    """``$DE_CACHE``, else ``$XDG_CACHE_HOME/digital-experiments``, else
    ``~/.cache/digital-experiments``: local copies of remote roots' files."""
    explicit = os.environ.get("DE_CACHE")
    if explicit:
        return Path(explicit).expanduser().absolute()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base, "digital-experiments").absolute()


def _endpoint() -> str:
    return (
        os.environ.get("AWS_ENDPOINT_URL")
        or os.environ.get("AWS_ENDPOINT_URL_S3")
        or "AWS's S3 endpoint"
    )


def _client(url: str) -> Any:
    """A boto3 S3 client from the standard AWS settings, with short timeouts so an
    unreachable endpoint fails in seconds, not minutes."""
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise StoreError(
            f"{url!r} is an S3 root, and the S3 client is not installed: "
            "pip install 'digital-experiments[s3]'."
        ) from None
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    allow_http = os.environ.get("AWS_ALLOW_HTTP", "").lower() in ("1", "true", "yes")
    if endpoint and endpoint.startswith("http://") and not allow_http:
        raise StoreError(
            f"{url}: AWS_ENDPOINT_URL={endpoint!r} is plain http, which would send "
            "credentials unencrypted: set AWS_ALLOW_HTTP=true for a loopback or trusted "
            "server, or use https."
        )
    config = Config(
        connect_timeout=5,
        read_timeout=30,
        retries={"max_attempts": ATTEMPTS, "mode": "standard"},
        max_pool_connections=READERS,
        # path-style URLs: S3-compatible servers rarely have per-bucket host names
        s3={"addressing_style": "path"} if endpoint else None,
    )
    try:
        session = boto3.session.Session()  # one per client: sessions are not thread-safe
        return session.client("s3", endpoint_url=endpoint or None, config=config)
    except Exception as exc:  # a bad profile, region or endpoint: say which
        raise StoreError(f"{url}: cannot configure the S3 client: {exc}") from None
