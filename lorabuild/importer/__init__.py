"""``lorabuild import``: the configs, scripts and LoRA files people already have, as recipes.

- :mod:`~lorabuild.importer.model`: :class:`Imported` (a recipe as dotted keys, and the
  :class:`Note` list of what could not be carried over), :class:`ImportFailed`.
- :mod:`~lorabuild.importer.kohya`: :func:`from_kohya_options`, kohya's options and dataset config
  back into recipe keys (the reverse of :mod:`lorabuild.plan.kohya_config`);
  :mod:`~lorabuild.importer.dataset` the dataset half, :mod:`~lorabuild.importer.family` the family,
  :mod:`~lorabuild.importer.values` the values, :mod:`~lorabuild.importer.prune` the keys left out.
- :mod:`~lorabuild.importer.scripts`: the training launch in a bash, PowerShell
  (:mod:`~lorabuild.importer.powershell`, the tree-sitter grammar) or ``.bat`` script.
- :mod:`~lorabuild.importer.header`: a LoRA file's ``ss_*`` metadata.
- :mod:`~lorabuild.importer.gui` (the kohya_ss GUI's JSON) and :mod:`~lorabuild.importer.lorascripts`
  (lora-scripts' TOMLs and launch scripts): other tools' configs, translated into kohya's options
  (:mod:`~lorabuild.importer.translated`) with every source key accounted for.
- :mod:`~lorabuild.importer.sources`: :func:`import_sources`, each file read by its kind (kohya's
  TOMLs, scripts, a LoRA's header; readers of other tools' configs register there).
- :mod:`~lorabuild.importer.write`: the recipe text, checked by the schema, written atomically.
- :mod:`~lorabuild.importer.diff`: where an existing recipe and a source disagree, by dotted key.

May import: :mod:`lorabuild.plan` and the layers below it (not :mod:`lorabuild.build` or
:mod:`lorabuild.rules`, its siblings).
"""

from __future__ import annotations

from lorabuild.importer.kohya import from_kohya_options
from lorabuild.importer.model import Imported, ImportFailed, Note, NoteKind

__all__ = ["ImportFailed", "Imported", "Note", "NoteKind", "from_kohya_options"]
