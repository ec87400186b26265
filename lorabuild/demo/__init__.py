"""The offline demo: a random-weight SD1.5-shaped test model and a synthetic dataset.

- :mod:`~lorabuild.demo.demo`: ``lorabuild demo``'s inputs (the recipe and its ``--set`` overrides).
- :mod:`~lorabuild.demo.testmodel`: the CPU test model kohya can train on.
- :mod:`~lorabuild.demo.synthetic`: coloured shapes with booru-style captions.

May import: :mod:`lorabuild.pipeline` and the layers below it.
"""
