"""Deep Zoom grid geometry, pure."""

from __future__ import annotations

import pytest

from slideserver.errors import TileNotFound
from slideserver.models import Level, SlideInfo
from slideserver.tiling.deepzoom import DeepZoomGrid

APERIO = SlideInfo(
    format="aperio",
    vendor="aperio",
    levels=(
        Level(8192, 6144, 1.0, 256, 256),
        Level(2048, 1536, 4.0, 256, 256),
        Level(512, 384, 16.0, 256, 256),
    ),
)


def test_native_square_tiles_give_tile_size_and_no_overlap() -> None:
    grid = DeepZoomGrid.for_slide(APERIO)
    assert (grid.tile_size, grid.overlap) == (256, 0)


def test_untiled_slide_falls_back_to_254_with_overlap() -> None:
    info = SlideInfo(format="x", vendor=None, levels=(Level(1000, 800, 1.0),))
    grid = DeepZoomGrid.for_slide(info)
    assert (grid.tile_size, grid.overlap) == (254, 1)


def test_levels_halve_down_to_one_pixel() -> None:
    grid = DeepZoomGrid.for_slide(APERIO)
    assert grid.z_dimensions[-1] == (8192, 6144)
    assert grid.z_dimensions[-2] == (4096, 3072)
    assert grid.z_dimensions[0] == (1, 1)
    assert grid.level_count == 14


def test_stored_levels_map_onto_matching_deep_zoom_levels() -> None:
    grid = DeepZoomGrid.for_slide(APERIO)
    assert grid.stored_by_z[13] == 0
    assert grid.stored_by_z[12] is None
    assert grid.stored_by_z[11] == 1
    assert grid.stored_by_z[9] == 2


def test_interior_tile_maps_to_a_stored_tile() -> None:
    geometry = DeepZoomGrid.for_slide(APERIO).geometry(11, 2, 3)
    assert geometry.stored_level == 1
    assert (geometry.l0_x, geometry.l0_y, geometry.l0_width) == (2048, 3072, 1024)
    assert (geometry.z_width, geometry.z_height) == (256, 256)


def test_edge_tile_is_cropped_and_not_passed_through() -> None:
    info = SlideInfo(format="x", vendor=None, levels=(Level(1000, 700, 1.0, 256, 256),))
    geometry = DeepZoomGrid.for_slide(info).geometry(10, 3, 2)
    assert (geometry.z_width, geometry.z_height) == (1000 - 768, 700 - 512)
    assert geometry.stored_level is None


def test_overlap_extends_tiles_with_neighbours() -> None:
    info = SlideInfo(format="x", vendor=None, levels=(Level(1000, 800, 1.0),))
    geometry = DeepZoomGrid.for_slide(info).geometry(10, 1, 0)
    assert geometry.l0_x == 253
    assert geometry.z_width == 256


@pytest.mark.parametrize(("z", "col", "row"), [(14, 0, 0), (-1, 0, 0), (13, 32, 0), (13, 0, 24)])
def test_tiles_outside_the_pyramid_are_refused(z: int, col: int, row: int) -> None:
    with pytest.raises(TileNotFound):
        DeepZoomGrid.for_slide(APERIO).check(z, col, row)


def test_dzi_names_size_tile_and_overlap() -> None:
    xml = DeepZoomGrid.for_slide(APERIO).dzi_xml("jpeg")
    assert 'TileSize="256"' in xml and 'Overlap="0"' in xml and 'Width="8192"' in xml


def _levels(*tiles: tuple[int | None, int | None]) -> SlideInfo:
    """A three-level slide whose levels have the given stored tile sizes."""
    sizes = ((4096, 3072, 1.0), (1024, 768, 4.0), (256, 192, 16.0))
    levels = tuple(
        Level(w, h, d, tw, th) for (w, h, d), (tw, th) in zip(sizes, tiles, strict=False)
    )
    return SlideInfo(format="x", vendor=None, levels=levels)


@pytest.mark.parametrize(
    ("info", "grid"),
    [
        pytest.param(_levels((64, 64)), (254, 1), id="64px-tiles-too-small"),
        pytest.param(_levels((127, 127)), (254, 1), id="just-under-128"),
        pytest.param(_levels((128, 128)), (128, 0), id="128-is-native"),
        pytest.param(_levels((1024, 1024)), (1024, 0), id="1024-is-native"),
        pytest.param(_levels((2048, 2048)), (254, 1), id="over-1024-too-large"),
        pytest.param(_levels((256, 128)), (254, 1), id="not-square"),
        pytest.param(_levels((None, None)), (254, 1), id="strips"),
        pytest.param(_levels((512, 512), (256, 256)), (512, 0), id="mixed-level0-native"),
        pytest.param(_levels((64, 64), (256, 256)), (254, 1), id="mixed-level0-too-small"),
        pytest.param(_levels((240, 240), (240, 240), (240, 240)), (240, 0), id="aperio-240"),
    ],
)
def test_grid_follows_stored_tiles_only_from_128_to_1024_square(
    info: SlideInfo, grid: tuple[int, int]
) -> None:
    """README, "How tiles are made": native square tiles 128..1024 px, else 254 px + overlap 1."""
    chosen = DeepZoomGrid.for_slide(info)
    assert (chosen.tile_size, chosen.overlap) == grid


def test_small_stored_tiles_are_never_passed_through() -> None:
    grid = DeepZoomGrid.for_slide(_levels((64, 64), (64, 64), (64, 64)))
    assert set(grid.stored_by_z) == {None}


def test_real_slide_with_64px_tiles_gets_the_254_grid() -> None:
    """openslide-python's boxes.tiff stores 64 x 64 tiles on four levels."""
    from slideserver.models import SlideSource
    from slideserver.readers.registry import default_registry
    from tests.realworld import realworld_dir

    path = realworld_dir() / "slides" / "openslide-python" / "boxes.tiff"
    with default_registry().open(SlideSource(path)) as reader:
        info = reader.info
    assert {(lv.tile_width, lv.tile_height) for lv in info.levels} == {(64, 64)}
    xml = DeepZoomGrid.for_slide(info).dzi_xml("jpeg")
    assert 'TileSize="254"' in xml and 'Overlap="1"' in xml
