"""URI layer: local atomic writes, S3 round trips on the moto server, and retries through a 503-injecting proxy."""

from __future__ import annotations

import hashlib
import http.client
import http.server
import os
import stat
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest

from rrsis import storage
from rrsis.errors import StorageError
from rrsis.storage import s3


def test_local_roundtrip_atomic_and_listing(tmp_path: Path) -> None:
    base = str(tmp_path / "out")
    storage.put_bytes(storage.join(base, "a/b/x.bin"), b"xyz")
    storage.put_bytes("file://" + storage.join(base, "a/y.bin"), b"12345")
    assert storage.get_bytes(f"{base}/a/b/x.bin") == b"xyz"
    assert storage.size(f"{base}/a/y.bin") == 5
    assert storage.exists(f"{base}/a/y.bin") and not storage.exists(f"{base}/a/z.bin")
    assert storage.list_prefix(base) == [f"{base}/a/b/x.bin", f"{base}/a/y.bin"]
    assert storage.list_prefix(f"file://{base}/a/y") == [f"file://{base}/a/y.bin"]
    src = tmp_path / "src.bin"
    src.write_bytes(b"file-data")
    storage.put_file(src, f"{base}/c.bin")
    storage.get_file(f"{base}/c.bin", tmp_path / "back" / "c.bin")
    assert (tmp_path / "back" / "c.bin").read_bytes() == b"file-data"
    storage.delete(f"{base}/c.bin")
    storage.delete(f"{base}/c.bin")  # idempotent
    assert not storage.exists(f"{base}/c.bin")
    assert not [p for p in Path(base).rglob("*") if p.name.endswith(".tmp")]
    with pytest.raises(StorageError, match=r"missing\.bin"):
        storage.get_bytes(f"{base}/missing.bin")


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_local_writes_follow_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    """Atomic writes give the mode a plain write would (0666 & ~umask), not mkstemp's 0600."""
    src = tmp_path / "src.bin"
    src.write_bytes(b"data")
    old = os.umask(umask)
    try:
        storage.put_bytes(str(tmp_path / "out" / "a.bin"), b"a")
        storage.put_file(src, f"file://{tmp_path}/out/b.bin")
        storage.get_file(str(tmp_path / "out" / "b.bin"), tmp_path / "back" / "c.bin")
        plain = tmp_path / "plain.bin"
        plain.write_bytes(b"p")
    finally:
        os.umask(old)
    assert stat.S_IMODE(plain.stat().st_mode) == mode
    for name in ("out/a.bin", "out/b.bin", "back/c.bin"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name


def test_join_and_remote() -> None:
    assert storage.join("s3://b/runs/", "/x/", "", "t.tif") == "s3://b/runs/x/t.tif"
    assert storage.is_remote("s3://b/k") and not storage.is_remote("/tmp/k") and not storage.is_remote("file:///k")
    with pytest.raises(StorageError, match="'gopher'"):
        storage.get_bytes("gopher://x/y")


def test_s3_roundtrip(tmp_path: Path, s3_bucket: str) -> None:
    uri = f"s3://{s3_bucket}/p/obj.bin"
    storage.put_bytes(uri, b"hello")
    assert storage.exists(uri) and storage.size(uri) == 5
    assert storage.get_bytes(uri) == b"hello"
    storage.get_file(uri, tmp_path / "o.bin")
    assert (tmp_path / "o.bin").read_bytes() == b"hello"
    storage.delete(uri)
    assert not storage.exists(uri)
    with pytest.raises(StorageError, match=r"obj\.bin failed: no such object"):
        storage.get_bytes(uri)


@pytest.mark.slow
def test_thousand_mask_tiles_on_s3(s3_bucket: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from rrsis.geo.raster import write_mask_tile

    base = f"s3://{s3_bucket}/run/scene"
    tf = (10.0, 0.0, 0.0, 0.0, -10.0, 0.0)

    def write(i: int) -> str:
        mask = np.full((16, 16), i % 251, dtype=np.uint8)
        return write_mask_tile(storage.join(base, f"r{i // 40:05d}_c{i % 40:05d}.tif"), mask, tf, "EPSG:4326")

    with ThreadPoolExecutor(8) as pool:
        written = sorted(pool.map(write, range(1000)))
    listed = storage.list_prefix(base)
    assert listed == written and len(listed) == 1000
    for uri in listed[::97]:
        assert storage.get_bytes(uri)[:4] == b"II*\x00"  # a little-endian TIFF


class FaultProxy(http.server.ThreadingHTTPServer):
    """Answers 503 SlowDown to every third request, forwards the others to the real S3 server."""

    def __init__(self, target: str) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.target = urlparse(target)
        self.lock = threading.Lock()
        self.requests = 0
        self.faults = 0
        self.forwarded_puts: Counter[str] = Counter()


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    server: FaultProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def _handle(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.server.lock:
            self.server.requests += 1
            fail = self.server.requests % 3 == 0
            if fail:
                self.server.faults += 1
            elif self.command == "PUT":
                self.server.forwarded_puts[self.path] += 1
        if fail:
            err = b"<Error><Code>SlowDown</Code><Message>injected</Message></Error>"
            self.send_response(503)
            self.send_header("Content-Length", str(len(err)))
            self.end_headers()
            self.wfile.write(err)
            return
        conn = http.client.HTTPConnection(self.server.target.hostname, self.server.target.port, timeout=30)
        conn.request(self.command, self.path, body=body, headers=dict(self.headers.items()))
        resp = conn.getresponse()
        data = resp.read()
        self.send_response(resp.status)
        for key, value in resp.getheaders():
            if key.lower() not in ("content-length", "transfer-encoding", "connection", "server", "date"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        conn.close()

    do_GET = do_PUT = do_HEAD = do_DELETE = do_POST = _handle


@pytest.fixture()
def fault_proxy(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    proxy = FaultProxy(s3_endpoint)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{proxy.server_address[1]}")
    s3.configure(max_attempts=6, backoff_s=0.01)
    yield proxy
    s3.configure()
    proxy.shutdown()
    proxy.server_close()


def test_writes_survive_injected_503s(s3_bucket: str, s3_endpoint: str, fault_proxy: FaultProxy) -> None:
    payloads = {f"s3://{s3_bucket}/faulty/obj{i:03d}.bin": hashlib.sha256(str(i).encode()).digest() * 50
                for i in range(30)}  # fmt: skip
    for uri, data in payloads.items():
        storage.put_bytes(uri, data)
    assert fault_proxy.faults >= 10  # every third request of >= 30 failed
    # every object was forwarded (i.e. written) exactly once, and reads back intact through the faulty proxy
    assert sorted(fault_proxy.forwarded_puts.values()) == [1] * len(payloads)
    assert storage.list_prefix(f"s3://{s3_bucket}/faulty/") == sorted(payloads)
    for uri, data in payloads.items():
        assert storage.get_bytes(uri) == data


def test_gives_up_with_one_line_and_no_secrets(s3_bucket: str, fault_proxy: FaultProxy) -> None:
    s3.configure(max_attempts=1, backoff_s=0.0)
    fault_proxy.requests = 2  # the next request is the third: 503
    with pytest.raises(StorageError) as info:
        storage.put_bytes(f"s3://{s3_bucket}/x.bin", b"1")
    message = str(info.value)
    assert "\n" not in message and "SlowDown" in message and "after 1 attempts" in message
    assert "testing-secret-key" not in message and "testing-key-id" not in message
