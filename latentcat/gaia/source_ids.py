"""Facts about Gaia DR3 source_ids that every stage relies on."""

MAX_SOURCE_ID = 12 * 4**12 << 35
"""Every Gaia DR3 source_id is above 0 and below this: ``source_id >> 35`` is the source's
level-12 nested HEALPix pixel, of which there are 12 * 4**12."""
