"""The build plan, computed purely from a recipe and its facts, and the views of it.

- :mod:`~lorabuild.plan.plan`: :func:`build_plan` -> the frozen :class:`Plan` (staged dataset, kohya's
  step counts, config and dataset documents, launch command, expected outputs). No I/O.
- :mod:`~lorabuild.plan.summary`: the summary ``lorabuild check`` prints.
- :mod:`~lorabuild.plan.tags`: tag frequencies before and after the caption rules (``lorabuild tags``,
  ``tags.csv``), and the triggers a LoRA is activated with (the report's and the webui card's).

May import: :mod:`lorabuild.probe` and the layers below it.
"""
