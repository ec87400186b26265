"""Facts about the world a recipe points at, probed once before any rule or plan runs.

- :mod:`~lorabuild.probe.facts`: :func:`gather`, the imperative shell: folder listings, captions, the
  model header, installed packages, other builds, returned as frozen :class:`Facts`.
- :mod:`~lorabuild.probe.cache`: the probe cache the stage manifest keeps (file keys, image records).
- :mod:`~lorabuild.probe.environment`: the installed packages, kohya's tagger script, the other builds.
- :mod:`~lorabuild.probe.inputs`: the input fingerprint, a ``stat``-only hash of what a check reads.
- :mod:`~lorabuild.probe.images`: image headers (sizes, transparency, EXIF orientation, damage).
- :mod:`~lorabuild.probe.modelfile`: what a base model file is, from its header.
- :mod:`~lorabuild.probe.decodecheck`: whether an image decodes all the way, on every core.
- :mod:`~lorabuild.probe.imagefix`: what a staged image needs so kohya trains on what the user sees.
- :mod:`~lorabuild.probe.clipfolder`: the user's own CLIP folder and aesthetic head (``[pick]``), from
  their files alone (no torch).

May import: :mod:`lorabuild.kohya` and the layers below it.
"""
