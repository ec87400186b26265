"""The recipe: what the user writes, loaded and validated.

- :mod:`~lorabuild.recipe.schema`: one frozen pydantic model per TOML table (``extra="forbid"``).
- :mod:`~lorabuild.recipe.load`: TOML file -> ``--set`` overrides -> validation -> :class:`LoadedRecipe`,
  with every problem at once as ``file: key: message``.
- :mod:`~lorabuild.recipe.expand`: ``extends`` and ``[sweep]``, on the plain TOML documents.
- :mod:`~lorabuild.recipe.captions`: the caption tag rules, as pure functions over tags.

May import: :mod:`lorabuild.render`, :mod:`lorabuild.problems`, :mod:`lorabuild.settings` (import-linter
contracts in ``pyproject.toml``). Nothing here probes the disk beyond the recipe files themselves.
"""
