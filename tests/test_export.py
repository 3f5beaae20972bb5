"""``slideserver export``: shards a training pipeline reads, a manifest, resuming, Dask, and
researchers' exports de-identified, limited to their collections and audited."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import cast

import numpy as np
import pytest
import sqlalchemy
from PIL import Image

from slideserver.export.plan import ExportOptions
from slideserver.export.run import DONE, ExportSummary, run_export
from slideserver.export.select import ApiCatalog, ExportRefused, LocalCatalog, Selection
from slideserver.export.sources import Origin
from slideserver.samples import SAMPLE_BIRTH_DATE, SAMPLE_MRN
from slideserver.settings import Settings
from tests.conftest import _security_settings, make_tokens
from tests.live_server import live_server

SVS = "S24-01234_A1_HE.svs"
PHI = (SAMPLE_MRN, "DOE", "Jane", SAMPLE_BIRTH_DATE, "S24-0", ".svs", ".tif", ".ome")
SMALL = ExportOptions(size=128, mpp=1.0, shard_size=10)
"""128 px patches at 1 µm/px: a few dozen per sample slide, read from stored level 1."""


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('export') / 'db.sqlite'}"


@pytest.fixture(scope="module")
def settings(samples_root: Path, db: str) -> Settings:
    return Settings(roots=(samples_root,), database_url=db)


@pytest.fixture(scope="module")
def tokens(samples_root: Path, db: str) -> dict[str, str]:
    return make_tokens(
        _security_settings(samples_root, db),
        {
            "study": ("researcher", samples_root.name),
            "elsewhere": ("researcher", "another-study"),
            "dr": ("pathologist", ""),
        },
    )


@pytest.fixture(scope="module")
def svs_id(settings: Settings) -> str:
    catalog = LocalCatalog(settings)
    try:
        catalog.refresh()
        entries, _ = catalog.select(Selection(query="A1_HE"))
    finally:
        catalog.close()
    return entries[0].slide_id


def export(
    out: Path,
    settings: Settings,
    selection: Selection,
    options: ExportOptions = SMALL,
    token: str | None = None,
    scheduler: str | None = None,
) -> ExportSummary:
    catalog = LocalCatalog(settings, token)
    try:
        return run_export(
            out, options, selection, catalog, Origin(), workers=0, progress=False,
            scheduler=scheduler,
        )  # fmt: skip
    finally:
        catalog.close()


def manifest(out: Path) -> list[dict[str, str]]:
    with (out / "manifest.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


# -- formats --


def test_webdataset_shards_hold_every_patch_of_the_manifest(
    tmp_path: Path, settings: Settings, svs_id: str
) -> None:
    summary = export(tmp_path, settings, Selection(ids=(svs_id,)))
    rows = manifest(tmp_path)
    assert summary.patches == len(rows) > 0 and not summary.skipped
    seen = []
    for shard in sorted(tmp_path.glob("*.tar")):
        with tarfile.open(shard) as tar:
            names = tar.getnames()
            for name in names[::2]:
                key = name.removesuffix(".jpg")
                assert names[names.index(name) + 1] == f"{key}.json"
                image = Image.open(io.BytesIO(tar.extractfile(name).read()))  # type: ignore[union-attr]
                meta = json.loads(tar.extractfile(f"{key}.json").read())  # type: ignore[union-attr]
                assert image.size == (128, 128) and meta["key"] == key
                seen.append(meta)
    assert [m["key"] for m in seen] == [r["key"] for r in rows]
    first = rows[0]
    assert (first["slide"], first["size"], first["mpp"], first["extent"]) == (
        svs_id,
        "128",
        "1.0",
        "512",
    )
    assert int(first["x"]) % 512 == 0 and int(first["y"]) % 512 == 0 and first["level"] == "1"


def test_zarr_holds_one_array_per_shard_with_its_keys(
    tmp_path: Path, settings: Settings, svs_id: str
) -> None:
    import zarr

    options = ExportOptions(size=128, mpp=1.0, shard_size=10, format="zarr")
    export(tmp_path, settings, Selection(ids=(svs_id,)), options)
    rows = manifest(tmp_path)
    group = zarr.open_group(str(tmp_path / "patches.zarr"), mode="r")
    arrays = dict(group.arrays())
    assert sorted(arrays) == sorted({r["shard"] for r in rows})
    keys = [k for name in sorted(arrays) for k in cast(list[str], arrays[name].attrs["keys"])]
    assert keys == [r["key"] for r in rows]
    first = arrays[sorted(arrays)[0]]
    assert first.shape[1:] == (128, 128, 3) and first.dtype == np.uint8
    assert np.asarray(first[0]).mean() < 230  # tissue, not glass


# -- resuming --


@pytest.mark.slow
def test_an_interrupted_export_resumes_without_redoing_finished_shards(
    tmp_path: Path, samples_root: Path, db: str, svs_id: str
) -> None:
    out = tmp_path / "out"
    command = [
        sys.executable, "-m", "slideserver", "export", svs_id, "--root", str(samples_root),
        "--database-url", db, "--out", str(out), "--size", "128", "--mpp", "0.5",
        "--shard-size", "1", "--workers", "1",
    ]  # fmt: skip
    first = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 120
    try:
        while not (out / DONE).exists() or len((out / DONE).read_text().split()) < 3:
            assert first.poll() is None, "the export ended before it could be interrupted"
            assert time.monotonic() < deadline, "no shard finished within 120 s"
            time.sleep(0.005)
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the coordinator and its workers, mid-run
        first.wait(timeout=30)
    done_before = (out / DONE).read_text().split()
    stamps = {name: (out / f"{name}.tar").stat().st_mtime_ns for name in done_before}
    second = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    done_after = (out / DONE).read_text().split()
    assert len(done_before) < len(done_after) and set(done_before) <= set(done_after)
    assert f"{len(done_before)} already done" in second.stdout
    assert all((out / f"{n}.tar").stat().st_mtime_ns == t for n, t in stamps.items())
    keys = [r["key"] for r in manifest(out)]
    assert len(keys) == len(set(keys)) == len(done_after)  # one patch per shard, none twice
    assert not [p for p in out.rglob(".*.partial")]  # what the killed run left is cleaned


def test_a_rerun_with_other_options_is_refused(
    tmp_path: Path, settings: Settings, svs_id: str
) -> None:
    export(tmp_path, settings, Selection(ids=(svs_id,)))
    with pytest.raises(ExportRefused, match="other options"):
        export(tmp_path, settings, Selection(ids=(svs_id,)), ExportOptions(size=64, mpp=1.0))


# -- Dask --


@pytest.mark.slow
def test_the_same_export_runs_on_a_dask_cluster(
    tmp_path: Path, settings: Settings, svs_id: str
) -> None:
    from distributed import LocalCluster

    local = export(tmp_path / "local", settings, Selection(ids=(svs_id,)))
    with LocalCluster(  # type: ignore[no-untyped-call]
        n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        on_dask = export(
            tmp_path / "dask",
            settings,
            Selection(ids=(svs_id,)),
            scheduler=cluster.scheduler_address,
        )
    assert on_dask.patches == local.patches > 0
    assert manifest(tmp_path / "dask") == manifest(tmp_path / "local")
    for shard in (tmp_path / "local").glob("*.tar"):
        assert (tmp_path / "dask" / shard.name).read_bytes() == shard.read_bytes()


# -- researchers --


def test_a_researchers_export_holds_no_phi(
    tmp_path: Path, settings: Settings, samples_root: Path, tokens: dict[str, str]
) -> None:
    summary = export(
        tmp_path, settings, Selection(collection=samples_root.name), token=tokens["study"]
    )
    assert summary.slides == 4 and summary.patches > 0
    rows = manifest(tmp_path)
    assert all(r["name"] == r["slide"] for r in rows)
    for path in tmp_path.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            if path.suffix == ".tar":
                with tarfile.open(path) as tar:
                    data = b"".join(
                        m.name.encode() + tar.extractfile(m).read()  # type: ignore[union-attr]
                        for m in tar.getmembers()
                    )
            for phi in PHI:
                assert phi.encode() not in data, (path.name, phi)


def test_a_researchers_export_is_audited_per_slide(
    tmp_path: Path, settings: Settings, samples_root: Path, tokens: dict[str, str], db: str
) -> None:
    summary = export(
        tmp_path, settings, Selection(collection=samples_root.name), token=tokens["study"]
    )
    engine = sqlalchemy.create_engine(db)
    with engine.connect() as conn:
        rows = conn.execute(
            sqlalchemy.text(
                "SELECT slide_id, role, count AS patches FROM security_audit_events "
                "WHERE subject = 'token:study' AND action = 'EXPORT patches' ORDER BY id DESC"
            )
        ).all()
    engine.dispose()
    latest = rows[: summary.slides]
    assert {r.role for r in latest} == {"researcher"}
    assert sum(r.patches for r in latest) == summary.patches
    assert len({r.slide_id for r in latest}) == summary.slides


def test_a_researcher_exports_nothing_outside_their_collections(
    tmp_path: Path, settings: Settings, samples_root: Path, tokens: dict[str, str], svs_id: str
) -> None:
    outside = export(
        tmp_path / "a", settings, Selection(collection=samples_root.name), token=tokens["elsewhere"]
    )
    by_id = export(tmp_path / "b", settings, Selection(ids=(svs_id,)), token=tokens["elsewhere"])
    assert outside.slides == 0 and by_id.slides == 0 and by_id.missing == [svs_id]


def test_a_researchers_search_finds_nothing_as_in_the_api(
    tmp_path: Path, settings: Settings, tokens: dict[str, str]
) -> None:
    as_researcher = export(
        tmp_path / "r", settings, Selection(query="S24-01234"), token=tokens["study"]
    )
    as_pathologist = export(
        tmp_path / "p", settings, Selection(query="S24-01234"), token=tokens["dr"]
    )
    assert as_researcher.slides == 0 and as_pathologist.slides == 2


def test_an_invalid_token_is_refused(settings: Settings) -> None:
    with pytest.raises(ExportRefused, match="not valid"):
        LocalCatalog(settings, "ss_not-a-real-token")


# -- through the server --


@pytest.mark.slow
def test_through_the_api_a_researcher_gets_the_same_pixels_as_from_the_files(
    tmp_path: Path,
    samples_root: Path,
    db: str,
    settings: Settings,
    tokens: dict[str, str],
    svs_id: str,
) -> None:
    import zarr

    options = ExportOptions(size=128, mpp=1.0, shard_size=100, format="zarr")
    flags = ("--auth", "tokens", "--database-url", db)
    with live_server([samples_root], *flags, scrub_env=True) as base:
        api = ApiCatalog(base, tokens["study"])
        try:
            remote = run_export(
                tmp_path / "api", options, Selection(ids=(svs_id,)), api,
                Origin(base, tokens["study"]), workers=0, progress=False,
            )  # fmt: skip
        finally:
            api.close()
    export(tmp_path / "files", settings, Selection(ids=(svs_id,)), options, tokens["study"])
    assert remote.patches > 0
    # The same patches; tissue fractions differ a little (the server's thumbnail is a JPEG).
    via_api_rows, via_files_rows = manifest(tmp_path / "api"), manifest(tmp_path / "files")
    assert [r["key"] for r in via_api_rows] == [r["key"] for r in via_files_rows]
    for a, b in zip(via_api_rows, via_files_rows, strict=True):
        assert abs(float(a.pop("tissue")) - float(b.pop("tissue"))) < 0.05 and a == b
    shard = f"{svs_id}-00000"
    via_api = zarr.open_array(str(tmp_path / "api" / "patches.zarr" / shard), mode="r")[...]
    via_files = zarr.open_array(str(tmp_path / "files" / "patches.zarr" / shard), mode="r")[...]
    assert np.array_equal(via_api, via_files)


# -- the command --


def test_the_command_needs_a_selection(tmp_path: Path, samples_root: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "slideserver",
            "export",
            "--root",
            str(samples_root),
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--query TEXT, --collection NAME or IDs" in result.stderr


def test_nothing_is_exported_when_the_audit_trail_cannot_be_written(
    tmp_path: Path, samples_root: Path, svs_id: str
) -> None:
    from slideserver.security.audit import AuditUnavailable

    db = tmp_path / "db.sqlite"
    catalog = LocalCatalog(Settings(roots=(samples_root,), database_url=f"sqlite:///{db}"))
    try:
        with sqlite3.connect(db) as conn:  # the audit table gone: no row can be written
            conn.execute("DROP TABLE security_audit_events")
        with pytest.raises(AuditUnavailable):
            run_export(
                tmp_path / "out", SMALL, Selection(ids=(svs_id,)), catalog, Origin(),
                workers=0, progress=False,
            )  # fmt: skip
    finally:
        catalog.close()
    assert not list((tmp_path / "out").glob("*.tar"))
    assert not (tmp_path / "out" / DONE).read_text()
