"""Opening an ingest input: a file (``.gz`` decompressed) or an ``http(s)://`` URL, streamed as text lines with
the bytes read reported to a progress callback, and the guards that turn a binary, non-UTF-8 or corrupt gzip
input into one :class:`~flopwise.errors.IngestError`."""

from __future__ import annotations

import codecs
import gzip
import io
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from flopwise.errors import IngestError

if TYPE_CHECKING:
    import httpx

#: called with (bytes read, total bytes or None)
Progress = Callable[[int, "int | None"], None]


class _CountingReader(io.RawIOBase):
    """A raw binary stream that counts the bytes read through it (for the progress bar)."""

    def __init__(self, raw: IO[bytes], progress: Progress | None, total: int | None) -> None:
        self._raw = raw
        self._progress = progress
        self._total = total
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._raw.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self.bytes_read += n
        if self._progress is not None and n:
            self._progress(self.bytes_read, self._total)
        return n

    def close(self) -> None:
        self._raw.close()
        super().close()


def _is_url(target: str) -> bool:
    return target.startswith(("http://", "https://"))


def _open_path(path: Path, progress: Progress | None) -> IO[str]:
    if not path.exists():
        raise IngestError(str(path), None, "no such file; check the path")
    if path.is_dir():
        raise IngestError(str(path), None, "is a directory; give a file")
    counting = _CountingReader(open(path, "rb"), progress, path.stat().st_size)  # noqa: SIM115 - closed by caller
    buffered: IO[bytes] = io.BufferedReader(counting, buffer_size=1 << 20)
    if path.suffix == ".gz":
        buffered = gzip.GzipFile(fileobj=buffered, mode="rb")  # type: ignore[assignment]
    return io.TextIOWrapper(buffered, encoding="utf-8-sig", newline="")


def _url_lines(client: httpx.Client, url: str, progress: Progress | None) -> Iterator[str]:
    import httpx

    try:
        with client.stream("GET", url) as response:
            if response.status_code >= 400:
                raise IngestError(
                    url, None, f"the server answered HTTP {response.status_code}; check the URL"
                )
            total = int(response.headers["content-length"]) if "content-length" in response.headers else None
            decoder = codecs.getincrementaldecoder("utf-8-sig")()
            done, pending = 0, ""
            for chunk in response.iter_bytes():
                done += len(chunk)
                pending += decoder.decode(chunk)
                *complete, pending = pending.splitlines(keepends=True) or [""]
                if pending.endswith(("\n", "\r")):
                    complete, pending = [*complete, pending], ""
                yield from complete
                if progress is not None:
                    progress(done, total)
            pending += decoder.decode(b"", final=True)
            if pending:
                yield pending
    except httpx.HTTPError as err:
        raise IngestError(
            url, None, f"could not fetch it ({type(err).__name__}: {err}); is the server up?"
        ) from None


def _text_lines(
    target: str, client: httpx.Client | None, progress: Progress | None
) -> tuple[Iterable[str], Any]:
    """The lines of *target* and the object to close afterwards (None for URLs)."""
    if _is_url(target):
        if client is None:
            raise IngestError(
                target, None, "reading a URL needs an HTTP client; pass http_client=httpx.Client()"
            )
        return _url_lines(client, target, progress), None
    fh = _open_path(Path(target), progress)
    return fh, fh


def _decode_guard(lines: Iterable[str], path: str) -> Iterator[str]:
    import zlib

    try:
        yield from lines
    except UnicodeDecodeError as err:
        raise IngestError(
            path, None, f"not UTF-8 text ({err.reason}); is it a binary or compressed file?"
        ) from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        what = "it ends early (truncated?)" if isinstance(err, EOFError) else str(err)
        raise IngestError(
            path, None, f"not a readable gzip file: {what}; check it with `gzip -t {path}`"
        ) from None


class _LineCounter:
    """Counts the non-blank, non-comment lines that pass through (the input rows of DCGM and nvidia-smi)."""

    def __init__(self, lines: Iterable[str], comment: str | None = None) -> None:
        self._lines = lines
        self._comment = comment
        self.count = 0
        self.repeats_of_first = 0
        self._first: str | None = None

    def __iter__(self) -> Iterator[str]:
        for line in self._lines:
            text = line.strip()
            if text and not (self._comment and text.startswith(self._comment)):
                self.count += 1
                if self._first is None:
                    self._first = text
                if text == self._first:
                    self.repeats_of_first += 1
            yield line
