"""tifffile-based reading, in three parts: segment I/O, metadata, and the reader.

- :mod:`.segments`: positioned reads (``pread``, ``preadv`` with ``RWF_NOWAIT``) and decodes of
  the tiles or strips of one TIFF image.
- :mod:`.metadata`: pyramid levels, associated images, vendor properties, MPP.
- :mod:`.reader`: :class:`~slideserver.readers.tiff.reader.TiffReader`.

The package imports none of them itself: :mod:`slideserver.readers.passthrough` builds on the
first two and the reader on it, so importing the package must not pull in the reader.
"""
