"""One exception tree for the whole server: domain errors, with no notion of HTTP.

Every error carries a stable machine-readable ``code`` (clients and logs rely on it); what a
transport answers with is decided where the transport is: the API layer maps these classes to
HTTP statuses in one table (:data:`slideserver.api.errors.ERROR_STATUS`). Messages name the
inputs that caused them but never patient data or absolute file paths.
"""

from __future__ import annotations


class SlideServerError(Exception):
    """Base of every error slideserver raises on purpose."""

    code = "internal_error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class BadRequest(SlideServerError):
    """The request is malformed (bad number, unknown parameter form)."""

    code = "bad_request"


class InvalidIIIFParameter(BadRequest):
    """A IIIF region, size, rotation, quality or format parameter is malformed."""

    code = "invalid_iiif_parameter"


class UnsupportedTileFormat(BadRequest):
    """An image format we do not encode (only jpeg, png and webp are served)."""

    code = "unsupported_format"


class InvalidRegion(SlideServerError):
    """A region asked of a reader has no pixels (zero or negative width or height)."""

    code = "bad_request"
    """What the API has always answered for it."""


class NotFound(SlideServerError):
    """Something addressed by the URL does not exist."""

    code = "not_found"


class SlideNotFound(NotFound):
    """No slide with that ID in the catalog."""

    code = "slide_not_found"


class TileNotFound(NotFound):
    """Level, column or row outside the slide's pyramid."""

    code = "tile_not_found"


class AssociatedImageNotFound(NotFound):
    """The slide has no associated image of that name."""

    code = "associated_image_not_found"


class SlideGone(NotFound):
    """The slide's file was removed or replaced while it was being served."""

    code = "slide_gone"


class SlideChanged(SlideGone):
    """The slide's file holds other content than was indexed under this ID (replaced in place).

    The ID answers this until the next scan lists the new content under a new ID.
    """

    code = "slide_changed"


class NotAcceptable(SlideServerError):
    """No representation the client accepts can be made (a DICOMweb transfer syntax, say)."""

    code = "not_acceptable"


class TooLarge(SlideServerError):
    """The requested output exceeds the configured limits."""

    code = "too_large"


class SlideUnreadable(SlideServerError):
    """The file exists but no reader can make sense of it (corrupt, truncated, unsupported)."""

    code = "slide_unreadable"


class SlideTruncated(SlideUnreadable):
    """The file ends before the image data its own structure points to (a cut copy)."""


class TileUnreadable(SlideUnreadable):
    """One region of an otherwise readable slide cannot be decoded."""

    code = "tile_unreadable"


class BackendUnavailable(SlideServerError):
    """A backend (database, cache) needed for this request is down."""

    code = "backend_unavailable"


class InsufficientStorage(BackendUnavailable):
    """The database's disk is full: reads still work, writes fail until space is freed."""

    code = "insufficient_storage"


class SlideStorageTimeout(SlideServerError):
    """A slide's file did not answer within the read deadline (a hung mount, a dying disk)."""

    code = "slide_storage_timeout"


class Unauthorized(SlideServerError):
    """No valid credentials."""

    code = "unauthorized"


class Forbidden(SlideServerError):
    """Valid credentials, but the role may not do this."""

    code = "forbidden"


# --- annotations (issue 16): edits with preconditions, refused content ---


class Unprocessable(SlideServerError):
    """Well-formed, but the content is refused (an invalid annotation, an unknown class)."""

    code = "unprocessable"


class Conflict(SlideServerError):
    """The request conflicts with what is stored (an identifier reused for other content, a
    signed report edited)."""

    code = "conflict"


class PreconditionFailed(SlideServerError):
    """``If-Match`` names a version that is no longer current (a lost update)."""

    code = "precondition_failed"


class PreconditionRequired(SlideServerError):
    """A change that must say which version it replaces came without ``If-Match``."""

    code = "precondition_required"
