"""The pool of open readers: reuse, bounds, and never closing a reader in use."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from slideserver.errors import SlideGone
from slideserver.handles import HandlePool
from slideserver.models import SlideSource
from slideserver.readers.registry import default_registry
from tests.helpers import GENERIC_TIFF, SVS


@pytest.fixture
def root(tmp_path: Path, samples_dir: dict[str, Path]) -> Path:
    shutil.copy(samples_dir[SVS], tmp_path / SVS)
    shutil.copy(samples_dir[GENERIC_TIFF], tmp_path / GENERIC_TIFF)
    return tmp_path


def slide(root: Path, name: str) -> tuple[str, SlideSource]:
    """A slide as the pool sees it: an ID (any string) and its file."""
    return f"id-{name}", SlideSource(root / name)


def test_a_reader_is_reused_between_borrows(root: Path) -> None:
    pool = HandlePool(default_registry(), [root], size=4)
    with pool.borrow(*slide(root, SVS)) as first:
        pass
    with pool.borrow(*slide(root, SVS)) as second:
        assert second is first


def test_the_pool_keeps_at_most_its_size_of_idle_readers(root: Path) -> None:
    pool = HandlePool(default_registry(), [root], size=1)
    for name in (SVS, GENERIC_TIFF):
        with pool.borrow(*slide(root, name)):
            pass
    assert len(pool) == 1


def test_an_evicted_reader_in_use_stays_open_until_returned(root: Path) -> None:
    pool = HandlePool(default_registry(), [root], size=1)
    with pool.borrow(*slide(root, SVS)) as busy:
        with pool.borrow(*slide(root, GENERIC_TIFF)):
            pass  # evicts SVS from the pool while we still hold it
        region = busy.read_region(0, 0, 0, 64, 64)
        assert region.size == (64, 64)


def test_a_replaced_file_is_reopened(root: Path, samples_dir: dict[str, Path]) -> None:
    pool = HandlePool(default_registry(), [root], size=4)
    with pool.borrow(*slide(root, SVS)) as first:
        pass
    (root / SVS).unlink()
    shutil.copy(samples_dir[SVS], root / SVS)
    with pool.borrow(*slide(root, SVS)) as second:
        assert second is not first


def test_a_deleted_file_is_gone(root: Path) -> None:
    pool = HandlePool(default_registry(), [root], size=4)
    (root / SVS).unlink()
    with pytest.raises(SlideGone), pool.borrow(*slide(root, SVS)):
        pass


def test_a_file_outside_the_roots_is_gone(
    root: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    shutil.copy(root / SVS, elsewhere / SVS)
    pool = HandlePool(default_registry(), [root], size=4)
    with pytest.raises(SlideGone) as gone:
        pool.fingerprint(*slide(elsewhere, SVS))
    assert gone.value.detail == f"slide 'id-{SVS}' is no longer available"


def test_lend_if_open_never_opens_a_slide(root: Path) -> None:
    pool = HandlePool(default_registry(), [root], size=4)
    slide_id, source = slide(root, SVS)
    assert pool.lend_if_open(slide_id, pool.fingerprint(slide_id, source)) is None
    assert len(pool) == 0


def test_lend_if_open_lends_the_open_reader_for_its_fingerprint_only(root: Path) -> None:
    pool = HandlePool(default_registry(), [root], size=4)
    slide_id, source = slide(root, SVS)
    with pool.borrow(slide_id, source) as reader:
        pass
    loan = pool.lend_if_open(slide_id, pool.fingerprint(slide_id, source))
    assert loan is not None and loan.reader is reader
    loan.release()
    assert pool.lend_if_open(slide_id, "another file") is None


def test_a_lent_reader_evicted_meanwhile_stays_open_until_released(root: Path) -> None:
    pool = HandlePool(default_registry(), [root], size=1)
    slide_id, source = slide(root, SVS)
    with pool.borrow(slide_id, source):
        pass
    loan = pool.lend_if_open(slide_id, pool.fingerprint(slide_id, source))
    assert loan is not None
    with pool.borrow(*slide(root, GENERIC_TIFF)):
        pass  # evicts SVS from the pool while the loan is out
    assert loan.reader.read_encoded_tile(0, 0, 0) is not None
    loan.release()
    assert len(pool) == 1
