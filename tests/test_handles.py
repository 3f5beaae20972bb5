"""The pool of open readers: reuse, bounds, and never closing a reader in use."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from slideserver.catalog.memory import MemoryCatalog
from slideserver.errors import SlideGone
from slideserver.handles import HandlePool
from slideserver.readers.registry import default_registry
from tests.helpers import GENERIC_TIFF, SVS


@pytest.fixture
def root(tmp_path: Path, samples_dir: dict[str, Path]) -> Path:
    shutil.copy(samples_dir[SVS], tmp_path / SVS)
    shutil.copy(samples_dir[GENERIC_TIFF], tmp_path / GENERIC_TIFF)
    return tmp_path


def records(root: Path) -> dict[str, object]:
    catalog = MemoryCatalog([root], default_registry())
    catalog.refresh()
    from slideserver.catalog.base import SlideQuery

    return {r.name: r for r in catalog.search(SlideQuery()).items}


def test_a_reader_is_reused_between_borrows(root: Path) -> None:
    pool = HandlePool(default_registry(), [root], size=4)
    record = records(root)[SVS]
    with pool.borrow(record) as first:  # type: ignore[arg-type]
        pass
    with pool.borrow(record) as second:  # type: ignore[arg-type]
        assert second is first


def test_the_pool_keeps_at_most_its_size_of_idle_readers(root: Path) -> None:
    pool = HandlePool(default_registry(), [root], size=1)
    recs = records(root)
    for name in (SVS, GENERIC_TIFF):
        with pool.borrow(recs[name]):  # type: ignore[arg-type]
            pass
    assert len(pool) == 1


def test_an_evicted_reader_in_use_stays_open_until_returned(root: Path) -> None:
    pool = HandlePool(default_registry(), [root], size=1)
    recs = records(root)
    with pool.borrow(recs[SVS]) as busy:  # type: ignore[arg-type]
        with pool.borrow(recs[GENERIC_TIFF]):  # type: ignore[arg-type]
            pass  # evicts SVS from the pool while we still hold it
        region = busy.read_region(0, 0, 0, 64, 64)
        assert region.size == (64, 64)


def test_a_replaced_file_is_reopened(root: Path, samples_dir: dict[str, Path]) -> None:
    pool = HandlePool(default_registry(), [root], size=4)
    record = records(root)[SVS]
    with pool.borrow(record) as first:  # type: ignore[arg-type]
        pass
    (root / SVS).unlink()
    shutil.copy(samples_dir[SVS], root / SVS)
    with pool.borrow(record) as second:  # type: ignore[arg-type]
        assert second is not first


def test_a_deleted_file_is_gone(root: Path) -> None:
    pool = HandlePool(default_registry(), [root], size=4)
    record = records(root)[SVS]
    (root / SVS).unlink()
    with pytest.raises(SlideGone), pool.borrow(record):  # type: ignore[arg-type]
        pass


def test_lend_if_open_never_opens_a_slide(root: Path) -> None:
    pool = HandlePool(default_registry(), [root], size=4)
    record = records(root)[SVS]
    assert pool.lend_if_open(record, pool.fingerprint(record)) is None  # type: ignore[arg-type]
    assert len(pool) == 0


def test_lend_if_open_lends_the_open_reader_for_its_fingerprint_only(root: Path) -> None:
    pool = HandlePool(default_registry(), [root], size=4)
    record = records(root)[SVS]
    with pool.borrow(record) as reader:  # type: ignore[arg-type]
        pass
    loan = pool.lend_if_open(record, pool.fingerprint(record))  # type: ignore[arg-type]
    assert loan is not None and loan.reader is reader
    loan.release()
    assert pool.lend_if_open(record, "another file") is None  # type: ignore[arg-type]


def test_a_lent_reader_evicted_meanwhile_stays_open_until_released(root: Path) -> None:
    pool = HandlePool(default_registry(), [root], size=1)
    recs = records(root)
    with pool.borrow(recs[SVS]):  # type: ignore[arg-type]
        pass
    loan = pool.lend_if_open(recs[SVS], pool.fingerprint(recs[SVS]))  # type: ignore[arg-type]
    assert loan is not None
    with pool.borrow(recs[GENERIC_TIFF]):  # type: ignore[arg-type]
        pass  # evicts SVS from the pool while the loan is out
    assert loan.reader.read_encoded_tile(0, 0, 0) is not None
    loan.release()
    assert len(pool) == 1
