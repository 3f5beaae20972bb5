"""DICOMweb over the sample slides: QIDO-RS searches, WADO-RS metadata, frames and Part 10 files.

Every sample (Aperio SVS, generic TIFF, OME-TIFF, DICOM WSI) is one VL Whole Slide Microscopy
Image series; the two slides of case S24-01234 share a study; the DICOM slide keeps its files'
UIDs. Errors keep the house JSON format.
"""

from __future__ import annotations

import email.parser
import email.policy
import io
from pathlib import Path
from typing import Any

import highdicom
import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit

from slideserver.dicom import uids
from slideserver.models import SlideSource
from slideserver.readers.registry import default_registry
from slideserver.samples import SAMPLE_MRN, SAMPLE_PATIENT_NAME
from tests.helpers import DICOM, SVS, assert_error, decode, slide_id

WSI = "1.2.840.10008.5.1.4.1.1.77.1.6"
JPEG_FRAMES = 'multipart/related; type="image/jpeg"'
RAW_FRAMES = (
    'multipart/related; type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2.1'
)
SLIM_FRAMES = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
"""What Slim (dicom-microscopy-viewer) asks frames for: whatever syntax the server likes."""


def value(item: dict[str, Any], tag: str) -> Any:
    """The first value of a DICOM JSON attribute, or None."""
    values = item.get(tag, {}).get("Value")
    return values[0] if values else None


def parts(response: Any) -> list[tuple[str, bytes]]:
    """The (Content-Type, body) of each part of a multipart/related answer."""
    head = f"Content-Type: {response.headers['content-type']}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + response.content)
    out: list[tuple[str, bytes]] = []
    for part in message.iter_parts():
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        out.append((str(part.get("Content-Type")), payload))
    return out


def series_of(client: Any, name: str) -> tuple[str, str, list[dict[str, Any]]]:
    """The study and series UIDs of a sample slide, and its instances (QIDO, clinical view)."""
    sid = slide_id(client, name)
    record = client.get(f"/api/slides/{sid}").json()
    accession = record["case"]["accession"]
    study = str(uids.study_uid(sid, accession))
    series = str(uids.series_uid(sid))
    if name == DICOM:
        found = client.get("/dicomweb/series", params={"PatientID": SAMPLE_MRN}).json()
        study, series = value(found[0], "0020000D"), value(found[0], "0020000E")
    instances = client.get(
        f"/dicomweb/studies/{study}/series/{series}/instances",
        params={"includefield": "AvailableTransferSyntaxUID"},
    ).json()
    return study, series, instances


def level(instances: list[dict[str, Any]], image_type: str = "VOLUME", last: bool = False) -> str:
    """The SOP Instance UID of the first (or last) instance of an image type."""
    found = [i for i in instances if i["00080008"]["Value"][2] == image_type]
    return str(value(found[-1] if last else found[0], "00080018"))


# --- QIDO-RS ----------------------------------------------------------------------------------


def test_every_slide_is_a_series_and_slides_of_one_case_share_a_study(client: Any) -> None:
    series = client.get("/dicomweb/series")
    assert series.status_code == 200
    assert series.headers["content-type"].startswith("application/dicom+json")
    assert len(series.json()) == 4
    assert {value(s, "00080060") for s in series.json()} == {"SM"}
    case = client.get("/dicomweb/studies", params={"AccessionNumber": "S24-01234"}).json()
    assert len(case) == 1
    assert value(case[0], "00201206") == 2  # NumberOfStudyRelatedSeries


def test_patient_id_and_name_with_wildcards_find_the_patient(client: Any) -> None:
    by_id = client.get("/dicomweb/studies", params={"PatientID": SAMPLE_MRN}).json()
    by_name = client.get("/dicomweb/studies", params={"PatientName": "doe*"}).json()
    assert len(by_id) == 1 and by_id == by_name
    assert value(by_id[0], "00100010") == {"Alphabetic": SAMPLE_PATIENT_NAME}
    assert client.get("/dicomweb/studies", params={"PatientName": "SMITH*"}).json() == []


def test_study_date_ranges(client: Any) -> None:
    dated = client.get("/dicomweb/studies", params={"StudyDate": "19000101-"}).json()
    assert dated and all(value(s, "00080020") for s in dated)
    assert client.get("/dicomweb/studies", params={"StudyDate": "-19000101"}).json() == []


def test_limit_and_offset_page_through_the_series(client: Any) -> None:
    everything = client.get("/dicomweb/series").json()
    first = client.get("/dicomweb/series", params={"limit": 2}).json()
    rest = client.get("/dicomweb/series", params={"limit": 10, "offset": 2}).json()
    assert first + rest == everything


def test_nested_searches_stay_inside_their_study_and_series(client: Any) -> None:
    study, series, instances = series_of(client, SVS)
    in_study = client.get(f"/dicomweb/studies/{study}/series").json()
    assert {value(s, "0020000E") for s in in_study} >= {series}
    assert all(value(s, "0020000D") == study for s in in_study)
    assert {value(i, "00080016") for i in instances} == {WSI}
    assert all(value(i, "0020000E") == series for i in instances)
    study_instances = client.get(f"/dicomweb/studies/{study}/instances").json()
    assert len(study_instances) > len(instances)  # the case's other slide is in the study


def test_instances_are_levels_label_and_overview_with_their_transfer_syntaxes(client: Any) -> None:
    _, _, instances = series_of(client, SVS)
    kinds = [i["00080008"]["Value"][2] for i in instances]
    assert kinds.count("VOLUME") >= 2 and "LABEL" in kinds and "OVERVIEW" in kinds
    volume = next(i for i in instances if i["00080008"]["Value"][2] == "VOLUME")
    assert volume["00083002"]["Value"] == [JPEGBaseline8Bit, ExplicitVRLittleEndian]


def test_a_dicom_slide_keeps_the_uids_of_its_files(
    client: Any, samples_dir: dict[str, Path]
) -> None:
    study, series, instances = series_of(client, DICOM)
    files = sorted(samples_dir[DICOM].glob("*.dcm"))
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    assert study == headers[0].StudyInstanceUID
    assert series in {h.SeriesInstanceUID for h in headers}
    assert {value(i, "00080018") for i in instances} <= {h.SOPInstanceUID for h in headers}


def test_uids_are_the_same_on_every_start(client: Any) -> None:
    sid = slide_id(client, SVS)
    study, series, _ = series_of(client, SVS)
    assert series == str(uids.series_uid(sid))
    assert study == str(uids.study_uid(sid, "S24-01234"))
    assert study.startswith(uids.UID_ROOT + ".")


# --- WADO-RS metadata -------------------------------------------------------------------------


def test_series_metadata_describes_tiled_full_levels_with_pixel_spacing(client: Any) -> None:
    study, series, _ = series_of(client, SVS)
    response = client.get(f"/dicomweb/studies/{study}/series/{series}/metadata")
    assert response.status_code == 200
    datasets = [pydicom.Dataset.from_json(item) for item in response.json()]
    levels = [ds for ds in datasets if ds.ImageType[2] == "VOLUME"]
    base = max(levels, key=lambda ds: ds.TotalPixelMatrixColumns)
    info = client.get(f"/api/slides/{slide_id(client, SVS)}").json()
    assert (base.TotalPixelMatrixColumns, base.TotalPixelMatrixRows) == (
        info["width"],
        info["height"],
    )
    spacing = base.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
    assert float(spacing[1]) == pytest.approx(info["mpp_x"] / 1000)
    assert base.DimensionOrganizationType == "TILED_FULL"
    assert base.OpticalPathSequence[0].OpticalPathIdentifier == "1"
    assert base.AccessionNumber == "S24-01234"
    assert base.NumberOfFrames == -(-base.TotalPixelMatrixColumns // base.Columns) * -(
        -base.TotalPixelMatrixRows // base.Rows
    )


def test_the_optical_path_carries_an_srgb_icc_profile(client: Any) -> None:
    import io

    from PIL import ImageCms

    study, series, _ = series_of(client, SVS)
    response = client.get(f"/dicomweb/studies/{study}/series/{series}/metadata")
    path = pydicom.Dataset.from_json(response.json()[0]).OpticalPathSequence[0]
    profile = ImageCms.ImageCmsProfile(io.BytesIO(path.ICCProfile))
    assert "sRGB" in ImageCms.getProfileDescription(profile)
    assert path.ColorSpace == "SRGB"


# --- frames -----------------------------------------------------------------------------------


def test_jpeg_frames_are_the_stored_tiles_byte_for_byte(
    client: Any, samples_dir: dict[str, Path]
) -> None:
    study, series, instances = series_of(client, SVS)
    uid = level(instances)
    response = client.get(
        f"/dicomweb/studies/{study}/series/{series}/instances/{uid}/frames/1,2",
        headers={"Accept": JPEG_FRAMES},
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith('multipart/related; type="image/jpeg"')
    with default_registry().open(SlideSource(samples_dir[SVS])) as reader:
        stored = [reader.read_encoded_tile(0, col, 0) for col in (0, 1)]
    assert [body for _, body in parts(response)] == [tile.data for tile in stored if tile]


def test_frames_in_any_syntax_are_the_stored_tiles_labelled_with_their_syntax(
    client: Any, samples_dir: dict[str, Path]
) -> None:
    """Slim's request (``transfer-syntax=*``) gets the stored JPEG tiles, not 17x the bytes."""
    study, series, instances = series_of(client, SVS)
    uid = level(instances)
    response = client.get(
        f"/dicomweb/studies/{study}/series/{series}/instances/{uid}/frames/2,1",
        headers={"Accept": SLIM_FRAMES},
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(
        'multipart/related; type="application/octet-stream"'
    )
    with default_registry().open(SlideSource(samples_dir[SVS])) as reader:
        stored = [reader.read_encoded_tile(0, col, 0) for col in (1, 0)]
    got = parts(response)
    assert [body for _, body in got] == [tile.data for tile in stored if tile]
    labels = {content_type.replace('"', "") for content_type, _ in got}
    assert labels == {f"application/octet-stream; transfer-syntax={JPEGBaseline8Bit}"}


def test_uncompressed_frames_are_the_decoded_tiles(client: Any) -> None:
    study, series, instances = series_of(client, SVS)
    uid = level(instances)
    url = f"/dicomweb/studies/{study}/series/{series}/instances/{uid}/frames/1"
    jpeg_frame = parts(client.get(url, headers={"Accept": JPEG_FRAMES}))[0][1]
    raw = client.get(url, headers={"Accept": RAW_FRAMES})
    assert raw.status_code == 200
    ((content_type, body),) = parts(raw)
    assert "transfer-syntax=1.2.840.10008.1.2.1" in content_type.replace('"', "")
    pixels = decode(jpeg_frame)
    assert np.frombuffer(body, np.uint8).reshape(pixels.shape).tolist() == pixels.tolist()


def test_frames_in_a_syntax_we_cannot_send_are_406(client: Any) -> None:
    study, series, instances = series_of(client, SVS)
    url = f"/dicomweb/studies/{study}/series/{series}/instances/{level(instances)}/frames/1"
    response = client.get(url, headers={"Accept": 'multipart/related; type="image/jp2"'})
    assert_error(response, 406, "not_acceptable")


def test_frames_outside_the_instance_are_400(client: Any) -> None:
    study, series, instances = series_of(client, SVS)
    base = f"/dicomweb/studies/{study}/series/{series}/instances/{level(instances)}"
    assert_error(client.get(f"{base}/frames/0"), 400, "bad_request")
    assert_error(client.get(f"{base}/frames/99999999"), 400, "bad_request")
    assert_error(client.get(f"{base}/frames/1,x"), 400, "bad_request")


# --- Part 10 instances ------------------------------------------------------------------------


def test_an_instance_is_a_part10_file_pydicom_and_highdicom_read(client: Any) -> None:
    study, series, instances = series_of(client, SVS)
    uid = level(instances, last=True)  # the smallest level
    response = client.get(f"/dicomweb/studies/{study}/series/{series}/instances/{uid}")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/dicom")
    ds = pydicom.dcmread(io.BytesIO(response.content))
    assert ds.file_meta.TransferSyntaxUID == JPEGBaseline8Bit
    assert ds.SOPInstanceUID == uid
    assert ds.pixel_array.shape == (int(ds.NumberOfFrames), ds.Rows, ds.Columns, 3)
    image = highdicom.Image.from_dataset(ds)
    total = image.get_total_pixel_matrix()
    assert total.shape == (ds.TotalPixelMatrixRows, ds.TotalPixelMatrixColumns, 3)


def test_an_uncompressed_instance_on_request_in_a_multipart_body(client: Any) -> None:
    study, series, instances = series_of(client, SVS)
    uid = level(instances, last=True)
    accept = 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.1'
    response = client.get(
        f"/dicomweb/studies/{study}/series/{series}/instances/{uid}", headers={"Accept": accept}
    )
    assert response.status_code == 200
    ((content_type, body),) = parts(response)
    assert content_type.startswith("application/dicom")
    ds = pydicom.dcmread(io.BytesIO(body))
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert ds.pixel_array.shape == (int(ds.NumberOfFrames), ds.Rows, ds.Columns, 3)


def test_an_instance_in_an_unknown_syntax_is_406(client: Any) -> None:
    study, series, instances = series_of(client, SVS)
    url = f"/dicomweb/studies/{study}/series/{series}/instances/{level(instances)}"
    accept = "application/dicom; transfer-syntax=1.2.840.10008.1.2.4.90"
    assert_error(client.get(url, headers={"Accept": accept}), 406, "not_acceptable")


def test_a_study_is_every_instance_of_its_series_as_part10_files(client: Any) -> None:
    study, _, _ = series_of(client, SVS)  # case S24-01234: the SVS and the generic TIFF
    listed = client.get(f"/dicomweb/studies/{study}/instances").json()
    response = client.get(f"/dicomweb/studies/{study}")
    assert response.status_code == 200
    content_type = response.headers["content-type"]
    assert content_type.startswith('multipart/related; type="application/dicom"')
    datasets = [pydicom.dcmread(io.BytesIO(body)) for _, body in parts(response)]
    assert sorted(ds.SOPInstanceUID for ds in datasets) == sorted(
        value(i, "00080018") for i in listed
    )
    assert len({ds.SeriesInstanceUID for ds in datasets}) == 2
    assert {ds.StudyInstanceUID for ds in datasets} == {study}
    for ds in datasets:
        assert ds.pixel_array.shape[-1] == 3


def test_a_study_in_an_unknown_syntax_or_media_type_is_406(client: Any) -> None:
    study, _, _ = series_of(client, SVS)
    for accept in (
        'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.80',
        "application/dicom+json",
    ):
        response = client.get(f"/dicomweb/studies/{study}", headers={"Accept": accept})
        assert_error(response, 406, "not_acceptable")


def test_an_unknown_or_malformed_study_is_404_or_400(client: Any) -> None:
    assert_error(client.get("/dicomweb/studies/1.2.3"), 404, "dicom_not_found")
    assert_error(client.get("/dicomweb/studies/not-a-uid"), 400)


# --- rendered images --------------------------------------------------------------------------


@pytest.mark.parametrize("resource", ["rendered?viewport=200,150", "thumbnail"])
def test_rendered_and_thumbnail_are_images(client: Any, resource: str) -> None:
    study, series, instances = series_of(client, SVS)
    url = f"/dicomweb/studies/{study}/series/{series}/instances/{level(instances)}/{resource}"
    response = client.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    assert max(decode(response.content).shape[:2]) <= 256


def test_rendered_label_is_the_label_image(client: Any) -> None:
    study, series, instances = series_of(client, SVS)
    url = f"/dicomweb/studies/{study}/series/{series}/instances/{level(instances, 'LABEL')}"
    response = client.get(f"{url}/rendered")
    label = client.get(f"/api/slides/{slide_id(client, SVS)}/associated/label")
    assert response.status_code == 200 and response.content == label.content


# --- errors -----------------------------------------------------------------------------------


def test_unknown_study_series_and_instance_are_404(client: Any) -> None:
    study, series, _ = series_of(client, SVS)
    assert_error(client.get("/dicomweb/studies/1.2.3/metadata"), 404, "dicom_not_found")
    assert_error(client.get(f"/dicomweb/studies/{study}/series/1.2.3/metadata"), 404)
    assert_error(
        client.get(f"/dicomweb/studies/{study}/series/{series}/instances/1.2.3/metadata"), 404
    )
    assert_error(client.get("/dicomweb/studies/1.2.3/series"), 404, "dicom_not_found")


@pytest.mark.parametrize(
    "url",
    [
        "/dicomweb/studies/not-a-uid/metadata",
        "/dicomweb/studies?NoSuchAttribute=1",
        "/dicomweb/studies?StudyDate=yesterday",
        "/dicomweb/studies?limit=100000",
    ],
)
def test_malformed_requests_are_400(client: Any, url: str) -> None:
    assert_error(client.get(url), 400)


def test_metadata_not_as_json_is_406(client: Any) -> None:
    response = client.get("/dicomweb/studies", headers={"Accept": "application/dicom"})
    assert_error(response, 406, "not_acceptable")


def test_fhir_imaging_study_names_the_dicomweb_study_and_series(client: Any) -> None:
    study, series, _ = series_of(client, SVS)
    bundle = client.get("/fhir/ImagingStudy", params={"identifier": "S24-01234"})
    assert bundle.status_code == 200, bundle.text[:200]
    (resource,) = [
        e["resource"]
        for e in bundle.json()["entry"]
        if e["resource"]["resourceType"] == "ImagingStudy"
    ]
    assert {"system": "urn:dicom:uid", "value": f"urn:oid:{study}"} in resource["identifier"]
    assert series in {s["uid"] for s in resource["series"]}
