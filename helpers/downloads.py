"""Downloading a file where every network wait is bounded: no download, nor the probe before one, can hang.

torchvision's own download waits as long as the operating system lets it: minutes behind a firewall
that drops packets, for ever on a server that accepts and never answers. Here each wait (connecting,
or silence in the middle of a file) is cut at `timeout` seconds, and the whole download at a deadline:
TLS handshake, status line, headers, chunk sizes and body, however slowly a server sends them.
(Looking up the host's address is left to the system's resolver, which has timeouts of its own; behind
a proxy, each wait for its answer to urllib's CONNECT request is cut at `timeout`, not the whole at the
deadline.)
"""

from __future__ import annotations

import hashlib
import http.client
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from tqdm.auto import tqdm

DOWNLOAD_TIMEOUT_S = 30.0  # the longest a host may stay silent: while connecting, or in the middle of a file
# The longest a dataset's whole download may take: generous, since a slow host that keeps sending is
# still working (CIFAR-10's 170 MB in 2 hours is 24 kB/s); it stops a server that drips for ever.
DOWNLOAD_DEADLINE_S = 7200.0
CHUNK_SIZE = 1 << 20
USER_AGENT = "pytorch/vision"  # what torchvision sends; some hosts refuse requests without one


class DownloadTimeoutError(TimeoutError):
    """A host stayed silent for too long, or the download ran past its deadline."""


def host_answers(url: str, *, timeout: float = DOWNLOAD_TIMEOUT_S, deadline: float) -> bool:
    """True when the host behind url sends the whole head of an HTTP answer (any status) before the deadline (a
    time.monotonic() value), each wait cut at timeout: a probe before a download, as bounded as the download."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return False
    watchdog = _Watchdog(deadline)
    opener = urllib.request.build_opener(_WatchedHandler(watchdog))
    try:
        request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": USER_AGENT})
        with watchdog, opener.open(request, timeout=min(timeout, remaining)):
            pass
    except urllib.error.HTTPError as error:  # a status such as 403 or 404 is an answer
        error.close()
    # No network, a silent or dripping host, more than 100 header lines, a URL that cannot be parsed.
    except (OSError, http.client.HTTPException, ValueError):
        return False
    return not watchdog.expired  # the watchdog's cut reads like the end of the headers: they may be partial


def download_first(urls: list[str], path: Path, md5: str | None = None, *, timeout: float | None = None,
                   deadline: float | None = None) -> None:
    """Fetch a file into `path` from the first of `urls` that serves it intact, else raise the first error.

    `timeout` defaults to DOWNLOAD_TIMEOUT_S; `deadline` (a time.monotonic() value) to DOWNLOAD_DEADLINE_S
    from now. A file already there with the right MD5 is kept.
    """
    timeout = DOWNLOAD_TIMEOUT_S if timeout is None else timeout
    deadline = time.monotonic() + DOWNLOAD_DEADLINE_S if deadline is None else deadline
    if path.is_file() and (md5 is None or file_md5(path) == md5):
        return
    errors = []
    for url in urls:
        try:
            download_file(url, path, md5, timeout=timeout, deadline=deadline)
            return
        except (OSError, http.client.HTTPException) as error:  # the next mirror may do better
            errors.append(error)
    raise errors[0]


def download_file(url: str, path: Path, md5: str | None, *, timeout: float, deadline: float) -> None:
    """Fetch url into path (written whole or not at all), checking its MD5 if given."""
    host = urlsplit(url).netloc
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        _fetch(request, partial, host, timeout=timeout, deadline=deadline)
        if md5 is not None and file_md5(partial) != md5:
            raise OSError(f"the file from {url} is corrupt (its MD5 checksum differs); try again")
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)


def _fetch(request: urllib.request.Request, target: Path, host: str, *, timeout: float, deadline: float) -> None:
    """Write the answer to request into target: each wait cut at timeout, all of them at the deadline."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise DownloadTimeoutError(f"the download ran past its deadline before {host} was tried")
    watchdog = _Watchdog(deadline)
    opener = urllib.request.build_opener(_WatchedHandler(watchdog))
    try:
        # The timeout bounds connecting and each read; the watchdog cuts whatever is still going at the deadline.
        with watchdog, opener.open(request, timeout=min(timeout, remaining)) as response:
            announced = response.length  # the Content-Length; None when the server sends chunks or closes at the end
            received = _copy(response, target, host)
    except (OSError, http.client.HTTPException) as error:
        if isinstance(error, urllib.error.HTTPError):
            error.close()  # an HTTP error holds the server's answer, and its socket, open until closed
        timeout_error = _as_timeout(error, host, timeout, watchdog)
        if timeout_error is None:
            raise
        raise timeout_error from error
    if watchdog.expired:  # the watchdog's cut reads like the server closing: what came may be partial
        raise DownloadTimeoutError(f"the download from {host} ran past its deadline")
    # http.client ends a body that stops short of its Content-Length quietly, as if it were complete.
    if announced is not None and received < announced:
        raise OSError(f"{host} closed the connection after {received:,} of the {announced:,} bytes it announced, "
                      "so the file is incomplete and was not kept; try again")


def _as_timeout(error: Exception, host: str, timeout: float, watchdog: _Watchdog) -> DownloadTimeoutError | None:
    """The wait that a network error ended, said plainly; None when the error is not a wait cut short."""
    if watchdog.expired:  # whatever broke at the deadline, the deadline broke it
        return DownloadTimeoutError(f"the download from {host} ran past its deadline")
    if isinstance(error, urllib.error.URLError) and isinstance(error.reason, TimeoutError):
        return DownloadTimeoutError(f"{host} did not answer within {timeout:g} s")
    if isinstance(error, TimeoutError):
        return DownloadTimeoutError(f"{host} sent nothing for {timeout:g} s")
    return None


def _copy(response, target: Path, host: str) -> int:
    """Write the body into target, returning how many bytes came."""
    received = 0
    with open(target, "wb") as file, tqdm(total=response.length, unit="B", unit_scale=True,
                                          desc=f"{target.stem} from {host}") as progress:
        while chunk := response.read1(CHUNK_SIZE):
            file.write(chunk)
            progress.update(len(chunk))
            received += len(chunk)
    return received


class _Watchdog:
    """Shuts down every connection of one download at its deadline, whatever is waiting on it then.

    A timer, rather than bounding each receive by the time left: http.client reads the status line, the
    headers and each chunk size through a buffered file of its own, and TLS handshakes and reads run in
    the ssl module's C code, so that bound would take subclasses of both socket and SSLSocket, wired into
    urllib. Shutting the connection down ends whichever wait is under way, in any of them, at once.
    """

    def __init__(self, deadline: float):
        self.deadline = deadline
        self.fired = False
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        self.timer = threading.Timer(max(0.0, deadline - time.monotonic()), self.shut_down)

    @property
    def expired(self) -> bool:
        """Whether the deadline has come (a wait it cut may end just before the timer runs)."""
        return self.fired or time.monotonic() >= self.deadline

    def watch(self, connection: socket.socket) -> None:
        """Cut this freshly connected socket at the deadline (at once if it has passed)."""
        with self.lock:
            # A duplicate: shutting it down ends the connection however its reader has wrapped the socket
            # (TLS takes over the original's descriptor), and it can never be a descriptor the download
            # already closed and the system gave to another file.
            self.sockets.append(connection.dup())
            if self.fired:
                self._shut(self.sockets[-1])

    def shut_down(self) -> None:
        """The timer's job: end every connection now."""
        with self.lock:
            self.fired = True
            for connection in self.sockets:
                self._shut(connection)

    @staticmethod
    def _shut(connection: socket.socket) -> None:
        try:
            connection.shutdown(socket.SHUT_RDWR)
        except OSError:  # the server has already closed it
            pass

    def __enter__(self) -> _Watchdog:
        self.timer.start()
        return self

    def __exit__(self, *exception) -> None:
        self.timer.cancel()
        self.timer.join()  # no thread outlives the download
        for connection in self.sockets:
            connection.close()


class _WatchedConnection(http.client.HTTPConnection):
    """An HTTP connection whose socket the watchdog (set by _WatchedHandler) cuts at the deadline."""

    watchdog: _Watchdog

    def connect(self):
        super().connect()
        self.watchdog.watch(self.sock)  # in HTTPS, before the TLS handshake: the handshake is watched too


class _WatchedHTTPSConnection(http.client.HTTPSConnection, _WatchedConnection):
    """HTTPS: its connect() calls _WatchedConnection.connect() for the plain socket, then wraps it in TLS."""


class _WatchedHandler(urllib.request.HTTPSHandler, urllib.request.HTTPHandler):
    """urllib's handler for http:// and https://, opening watched connections (proxies work as usual)."""

    def __init__(self, watchdog: _Watchdog):
        super().__init__()
        self.watchdog = watchdog

    def do_open(self, http_class, request, **connection_arguments):
        watched = _WatchedHTTPSConnection if issubclass(http_class, http.client.HTTPSConnection) else _WatchedConnection

        def connection(*arguments, **keywords):
            made = watched(*arguments, **keywords)
            made.watchdog = self.watchdog
            return made

        return super().do_open(connection, request, **connection_arguments)


def file_md5(path: Path) -> str:
    """The MD5 checksum torchvision records for its dataset files."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as file:
        while chunk := file.read(CHUNK_SIZE):
            digest.update(chunk)
    return digest.hexdigest()
