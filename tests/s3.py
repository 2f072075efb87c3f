"""A real S3 API on 127.0.0.1 (moto's server) behind a TCP proxy that an outage test can
pause: the process under test talks HTTP to it exactly as to a bucket."""

from __future__ import annotations

import contextlib
import socket
import threading


def bucket_keys(s3, prefix: str = "") -> list[str]:
    """Every key under ``prefix`` in the test bucket (the ``s3`` fixture), sorted."""
    pages = s3.client.get_paginator("list_objects_v2").paginate(Bucket=s3.bucket, Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


class PausableProxy:
    """Forwards 127.0.0.1:<port> to ``target``; ``pause()`` drops every open connection and
    refuses new ones until ``resume()`` (a storage outage, as the client sees one)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._paused = threading.Event()
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.refused = 0
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def pause(self) -> None:
        self._paused.set()
        with self._lock:
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._open.clear()

    def resume(self) -> None:
        self._paused.clear()

    def _accept(self) -> None:
        while True:
            client, _ = self._listener.accept()
            if self._paused.is_set():
                self.refused += 1
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(1 << 16):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            with self._lock:
                self._open -= {source, sink}
