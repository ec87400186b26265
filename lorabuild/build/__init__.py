"""The build folder ``build/<name>/``: the files lorabuild writes there, and what it remembers.

- :mod:`~lorabuild.build.artefacts`: a plan rendered into the bytes of each compiled artefact
  (``config.toml``, ``dataset.toml``, ``train.sh``...).
- :mod:`~lorabuild.build.state`: stage stamps, content digests and the build lock (``.lorabuild/``).
- :mod:`~lorabuild.build.saved`: the LoRA files a build saved, and their cached hashes.
- :mod:`~lorabuild.build.gridmanifest`: reading ``grid/grid.json``.

May import: :mod:`lorabuild.plan` and the layers below it (not :mod:`lorabuild.rules`).
"""
