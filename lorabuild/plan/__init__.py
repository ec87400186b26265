"""The build plan, computed purely from a recipe and its facts, and the views of it.

- :mod:`~lorabuild.plan.plan`: :func:`build_plan` -> the frozen :class:`Plan` (staged subsets, kohya's
  step counts, the typed config and dataset options, grid settings, launch command, saved files).
- :mod:`~lorabuild.plan.subsets`: each subset's staged images, captions and buckets.
- :mod:`~lorabuild.plan.kohya_config`: the recipe mapped onto kohya's ``--config_file`` and
  ``--dataset_config`` options (:mod:`lorabuild.kohya.config`).
- :mod:`~lorabuild.plan.evaluate`: what ``[evaluate]`` asks for (:class:`GridSettings`), and
  ``sample_prompts.txt``.
- :mod:`~lorabuild.plan.gridcells`: the evaluation grid's cells keyed by content, their order and
  gen_img prompt lines, and the sheets that lay them out (from the grid settings and file digests).
- :mod:`~lorabuild.plan.layout`: the build folder's layout (:class:`BuildLayout`); standard library only.
- :mod:`~lorabuild.plan.summary`: the summary ``lorabuild check`` prints.
- :mod:`~lorabuild.plan.tags`: tag frequencies before and after the caption rules (``lorabuild tags``,
  ``tags.csv``), and the triggers a LoRA is activated with (the report's and the webui card's).

No I/O. Nothing is imported here: ``python -m lorabuild.batch.makefile`` loads :mod:`~lorabuild.plan.layout`
without the planner.

May import: :mod:`lorabuild.probe` and the layers below it.
"""
