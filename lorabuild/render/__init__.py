"""Formats: quoting, a TOML writer, atomic file writes and the pictures lorabuild draws.

- :mod:`~lorabuild.render.quoting`: bash, PowerShell and TOML quoting (the templates' filters).
- :mod:`~lorabuild.render.toml`: a deterministic TOML writer for the files kohya reads.
- :mod:`~lorabuild.render.writer`: the one place that writes artefacts (atomic, only what changed).
- :mod:`~lorabuild.render.sheets`: labelled comparison sheets.
- :mod:`~lorabuild.render.fonts`: fonts with CJK coverage for the pictures.
- :mod:`~lorabuild.render.losslog`: kohya's TensorBoard loss logs, read and plotted.
- :mod:`~lorabuild.render.tfevents`: TensorBoard event files (TFRecord, protobuf scalars), read without TensorBoard.
- :mod:`~lorabuild.render.units`: quantities as people read them (file sizes).
- :mod:`~lorabuild.render.safetensors_header`: a safetensors header read, and rewritten for the same tensors.

May import: :mod:`lorabuild.problems` and :mod:`lorabuild.settings` only; nothing here knows recipes,
plans or kohya.
"""
