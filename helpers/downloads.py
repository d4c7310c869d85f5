"""Downloading a file where every network wait is bounded: no download can hang.

torchvision's own download waits as long as the operating system lets it: minutes behind a firewall
that drops packets, for ever on a server that accepts and never answers. Here each wait (connecting,
or silence in the middle of a file) is cut at `timeout` seconds, and the whole download at a deadline.
(Looking up the host's address is left to the system's resolver, which has timeouts of its own.)
"""

from __future__ import annotations

import hashlib
import http.client
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
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise DownloadTimeoutError(f"the download ran past its deadline before {host} was tried")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        # The timeout bounds the connection and every read; _copy checks the deadline between reads.
        with urllib.request.urlopen(request, timeout=min(timeout, remaining)) as response:
            _copy(response, partial, host, deadline)
        if md5 is not None and file_md5(partial) != md5:
            raise OSError(f"the file from {url} is corrupt (its MD5 checksum differs); try again")
        partial.replace(path)
    except DownloadTimeoutError:
        raise
    except urllib.error.HTTPError as error:
        error.close()  # an HTTP error holds the server's answer, and its socket, open until closed
        raise
    except urllib.error.URLError as error:
        if isinstance(error.reason, TimeoutError):
            raise DownloadTimeoutError(f"{host} did not answer within {timeout:g} s") from error
        raise
    except TimeoutError as error:
        raise DownloadTimeoutError(f"{host} sent nothing for {timeout:g} s") from error
    finally:
        partial.unlink(missing_ok=True)


def _copy(response, target: Path, host: str, deadline: float) -> None:
    with open(target, "wb") as file, tqdm(total=response.length, unit="B", unit_scale=True,
                                          desc=f"{target.stem} from {host}") as progress:
        # read1 returns what has arrived: a server that drips bytes cannot hold the loop past the deadline.
        while chunk := response.read1(CHUNK_SIZE):
            file.write(chunk)
            progress.update(len(chunk))
            if time.monotonic() > deadline:
                raise DownloadTimeoutError(f"the download from {host} ran past its deadline")


def file_md5(path: Path) -> str:
    """The MD5 checksum torchvision records for its dataset files."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as file:
        while chunk := file.read(CHUNK_SIZE):
            digest.update(chunk)
    return digest.hexdigest()
