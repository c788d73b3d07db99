"""Import files on disk: receiving an upload chunk by chunk, and reading its records back.

An upload is written to `<data_dir>/imports/<job id>.csv` as it arrives, so no file is
ever held in memory whole, and it stays there until its job ends: a job interrupted by a
stop resumes from that file. Line numbers are physical lines of the file (the header is
line 1), which is what a spreadsheet shows; a quoted value may span several lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from services.contacts.import_rows import Columns, HeaderError, read_header

DELIMITERS = (",", ";", "\t")
_FLUSH_BYTES = 1 << 20
_MAX_HEADER_BYTES = 64 * 1024
MAX_LINE_BYTES = 1 << 20


class NotCsv(ValueError):
    """The upload cannot be read as a UTF-8 CSV file; `line` is where reading stopped."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


class TooLarge(ValueError):
    """The upload is over the byte or row limit."""


@dataclass(frozen=True)
class Received:
    """An upload on disk, checked: its header and its rows, cut into batches."""

    path: Path
    columns: Columns
    delimiter: str
    spans: list[Span]

    @property
    def rows(self) -> int:
        return sum(span.rows for span in self.spans)


def job_path(directory: Path, job_id: uuid.UUID) -> Path:
    """Where a job's file lives while the job runs."""
    return directory / f"{job_id}.csv"


async def receive(chunks: AsyncIterator[bytes], path: Path, *, max_bytes: int) -> None:
    """Write the request body to `path` as it arrives; checks the header on the way.

    The header is checked as soon as its line is in, so a wrong file is refused before
    the rest of it is uploaded. Writes run in a thread, a megabyte at a time.
    """
    received = 0
    buffer = bytearray()
    header_checked = False
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = await asyncio.to_thread(path.open, "wb")
    try:
        async for chunk in chunks:
            received += len(chunk)
            if received > max_bytes:
                raise TooLarge(f"import files are limited to {max_bytes} bytes")
            buffer += chunk
            if not header_checked:
                end = buffer.find(b"\n")
                if end < 0 and len(buffer) <= _MAX_HEADER_BYTES:
                    continue
                header_line(bytes(buffer[: end if end >= 0 else len(buffer)]))
                header_checked = True
            if len(buffer) >= _FLUSH_BYTES:
                await asyncio.to_thread(handle.write, bytes(buffer))
                buffer.clear()
        if not header_checked:
            if not buffer.strip():
                raise NotCsv("the file is empty; the first line must be a header row")
            header_line(bytes(buffer))
        if buffer:
            await asyncio.to_thread(handle.write, bytes(buffer))
    finally:
        await asyncio.to_thread(handle.close)


def header_line(raw: bytes) -> tuple[Columns, str]:
    """The columns and delimiter of a header line; HeaderError or NotCsv when unusable."""
    try:
        text = raw.decode("utf-8").lstrip("\ufeff").rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise NotCsv("the file is not UTF-8 text", 1) from exc
    if not text.strip():
        raise NotCsv("the first line must be a header row naming the columns", 1)
    delimiter = max(DELIMITERS, key=text.count)
    if delimiter not in text:
        delimiter = ","
    try:
        names = next(csv.reader([text], delimiter=delimiter))
    except csv.Error as exc:
        raise NotCsv(f"the header row is not CSV: {exc}", 1) from exc
    return read_header(names), delimiter


@dataclass(frozen=True)
class Span:
    """Rows of the file as one batch: bytes [start, end), read independently of the rest.

    `line` is how many physical lines come before `start`, so line numbers stay right
    when a worker process reads the span on its own.
    """

    start: int
    end: int
    line: int
    rows: int


def scan(path: Path, delimiter: str, size: int, *, skip: int = 0, limit: int = 0) -> list[Span]:
    """Read the whole file once: it must decode and parse; cut its rows into spans of `size`.

    The first `skip` rows are left out (a resumed job); more than `limit` rows (when not
    0) is TooLarge. Blank lines are not rows.
    """
    spans: list[Span] = []
    with path.open("rb") as handle:
        lines = _Lines(handle, 0)
        reader = csv.reader(lines, delimiter=delimiter)
        try:
            next(reader)  # the header
            start, before, count, rows = lines.position, lines.line, 0, 0
            for cells in reader:
                if not cells or (len(cells) == 1 and not cells[0].strip()):
                    continue
                if skip:
                    skip -= 1
                    start, before = lines.position, lines.line
                    continue
                rows += 1
                count += 1
                if limit and rows > limit:
                    raise TooLarge(f"import files are limited to {limit} rows")
                if count == size:
                    spans.append(Span(start, lines.position, before, count))
                    start, before, count = lines.position, lines.line, 0
        except csv.Error as exc:
            raise NotCsv(f"line {lines.line}: {exc}", lines.line) from exc
    if count:
        spans.append(Span(start, lines.position, before, count))
    return spans


def check_file(path: Path, max_rows: int, batch_size: int) -> Received:
    """The upload, checked whole: header, UTF-8, CSV, 1 to `max_rows` rows, in spans."""
    columns, delimiter = read_columns(path)
    spans = scan(path, delimiter, batch_size, limit=max_rows)
    if not spans:
        raise NotCsv("the file has a header row but no rows")
    return Received(path, columns, delimiter, spans)


def read_columns(path: Path) -> tuple[Columns, str]:
    """The header of a file already received."""
    with path.open("rb") as handle:
        return header_line(handle.readline())


def read_span(path: Path, delimiter: str, span: Span) -> list[tuple[int, list[str]]]:
    """(first line, cells) of each row in `span`."""
    rows: list[tuple[int, list[str]]] = []
    with path.open("rb") as handle:
        handle.seek(span.start)
        lines = _Lines(handle, span.line, span.end)
        previous = span.line
        for cells in csv.reader(lines, delimiter=delimiter):
            first, previous = previous + 1, lines.line
            if cells and (len(cells) > 1 or cells[0].strip()):
                rows.append((first, cells))
    return rows


class _Lines:
    """Decoded lines of a binary file, counting lines and bytes as csv takes them.

    Line by line (not in the 8 KiB blocks of a text file), so a bad byte is reported on
    its own line, and csv never reads past the record it returns.
    """

    def __init__(self, handle: BinaryIO, line: int, end: int | None = None) -> None:
        self.handle = handle
        self.line = line
        self.position = handle.tell()
        self.end = end

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        if self.end is not None and self.position >= self.end:
            raise StopIteration
        raw = self.handle.readline(MAX_LINE_BYTES + 1)
        if not raw:
            raise StopIteration
        self.position += len(raw)
        self.line += 1
        if len(raw) > MAX_LINE_BYTES:  # never read an unbounded line into memory
            raise NotCsv(f"line {self.line} is longer than {MAX_LINE_BYTES} bytes", self.line)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise NotCsv(f"line {self.line} is not UTF-8 text", self.line) from exc


def remove(path: Path) -> None:
    """Delete a job's file (done or refused)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


__all__ = [
    "HeaderError",
    "NotCsv",
    "Received",
    "Span",
    "TooLarge",
    "check_file",
    "header_line",
    "job_path",
    "read_columns",
    "read_span",
    "receive",
    "remove",
    "scan",
]
