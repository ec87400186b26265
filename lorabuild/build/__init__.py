"""The build folder ``build/<name>/``: the files lorabuild writes there, and what it remembers.

- :mod:`~lorabuild.build.artefacts`: a plan rendered into the bytes of each compiled artefact
  (``config.toml``, ``dataset.toml``, ``train.sh``...).
- :mod:`~lorabuild.build.state`: stage stamps, content digests and the build lock (``.lorabuild/``).
- :mod:`~lorabuild.build.markers`: what make and lorabuild share in ``.lorabuild/`` (the folder's
  name, ``<stage>.done`` markers, the inputs' stat fingerprint); standard library only.
- :mod:`~lorabuild.build.dataset`: the staged dataset ``dataset/`` (links, converted images, captions),
  kept in step with the plan by its ``.stage.json`` records.
- :mod:`~lorabuild.build.saved`: the LoRA files a build saved, and their cached hashes.
- :mod:`~lorabuild.build.gridmanifest`: ``grid/grid.json``, made from the grid's cells and read back.

May import: :mod:`lorabuild.plan` and the layers below it (not :mod:`lorabuild.rules`).
"""
