"""Collection rules locate slides through the function the catalog's owner gives Security."""

from __future__ import annotations

import anyio

from slideserver.security import Security
from slideserver.security.principals import Principal
from slideserver.settings import Settings

RESEARCHER = Principal("token:r", "researcher", collections=("study-a",))
PLACES = {"in-study": ("slides", "study-a/x.svs"), "elsewhere": ("slides", "study-b/y.svs")}


def visible(security: Security, slide_id: str) -> bool:
    return anyio.run(security.slide_visible, RESEARCHER, slide_id)


def test_a_slide_is_visible_when_located_in_the_principals_collection() -> None:
    security = Security(Settings(auth="tokens"))
    security.locate = PLACES.get
    assert visible(security, "in-study")
    assert not visible(security, "elsewhere")
    assert not visible(security, "unknown")


def test_before_a_catalog_is_open_no_slide_is_located() -> None:
    assert not visible(Security(Settings(auth="tokens")), "in-study")
