"""Bitstream surgery on stored codestreams (no pixel decoding): JPEG tables and markers."""
