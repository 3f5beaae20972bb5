"""Log records: the per-second time stamp reads exactly as logging's own."""

from __future__ import annotations

import logging

import pytest

from slideserver.server.logs import FORMAT, SecondFormatter


def _record(created: float) -> logging.LogRecord:
    record = logging.LogRecord("slideserver.access", logging.INFO, "", 0, "GET %s", ("/x",), None)
    record.created = created
    record.msecs = (created - int(created)) * 1000
    return record


@pytest.mark.parametrize("created", [1_764_000_000.0, 1_764_000_000.999, 1_764_000_061.5])
def test_a_record_reads_as_the_standard_formatter_writes_it(created: float) -> None:
    assert SecondFormatter(FORMAT).format(_record(created)) == logging.Formatter(FORMAT).format(
        _record(created)
    )


def test_the_time_stamp_follows_the_clock_across_seconds() -> None:
    formatter = SecondFormatter(FORMAT)
    standard = logging.Formatter(FORMAT)
    for created in (1_764_000_000.25, 1_764_000_000.75, 1_764_000_001.25, 1_764_000_000.5):
        assert formatter.formatTime(_record(created)) == standard.formatTime(_record(created))


def test_an_explicit_date_format_is_honoured() -> None:
    record = _record(1_764_000_000.0)
    assert SecondFormatter(FORMAT).formatTime(record, "%Y") == logging.Formatter(FORMAT).formatTime(
        record, "%Y"
    )
