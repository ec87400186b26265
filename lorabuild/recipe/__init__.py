"""The recipe: what the user writes, loaded and validated.

- :mod:`~lorabuild.recipe.schema`: one frozen pydantic model per TOML table (``extra="forbid"``).
- :mod:`~lorabuild.recipe.load`: TOML file -> ``--set`` overrides -> validation -> :class:`LoadedRecipe`,
  with every problem at once as ``file: key: message``.
- :mod:`~lorabuild.recipe.expand`: a recipe file's builds, before validation: its bases merged
  (:mod:`~lorabuild.recipe.extends`), its ``[sweep]`` expanded (:mod:`~lorabuild.recipe.sweep`), ``--set`` on top;
  :mod:`~lorabuild.recipe.keys` reads, writes and rebases dotted keys in the plain TOML documents.
- :mod:`~lorabuild.recipe.many`: several recipe files at once (a queue, a Makefile, a Slurm array).
- :mod:`~lorabuild.recipe.captions`: the caption tag rules, as pure functions over tags.
- :mod:`~lorabuild.recipe.accelerate`: ``accelerate launch``'s options, to validate ``[launch] accelerate_args``.

May import: :mod:`lorabuild.render`, :mod:`lorabuild.problems`, :mod:`lorabuild.settings` (import-linter
contracts in ``pyproject.toml``). Nothing here probes the disk beyond the recipe files themselves.
"""
