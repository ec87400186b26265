"""One module per verb, each a stage of the pipeline (or a command of its own).

- :mod:`~lorabuild.stages.check`: load the recipe, probe its files, run the rules, plan (``lorabuild check``).
- :mod:`~lorabuild.stages.compile`: write the build folder's artefacts, only those that changed.
- :mod:`~lorabuild.stages.prepare`: stage the dataset (links, converted images, rule-edited captions),
  after kohya's WD14 tagger where ``[captions.autotag]`` asks for it.
- :mod:`~lorabuild.stages.train`: run kohya, then check and collect what it saved.
- :mod:`~lorabuild.stages.grid`: the epoch x weight comparison grid with kohya's ``gen_img.py``.
- :mod:`~lorabuild.stages.report`: ``report.html``.
- :mod:`~lorabuild.stages.install`: an epoch, its preview and card into the webui or ComfyUI.
- :mod:`~lorabuild.stages.pick`: the shortlist of epochs x weights from the grid's scores (``lorabuild pick``).
- :mod:`~lorabuild.stages.doctor`: ``lorabuild doctor`` and ``lorabuild setup``.

May import: :mod:`lorabuild.score`, :mod:`lorabuild.build`, :mod:`lorabuild.rules` and the layers below them, not each other
(an import-linter ``independence`` contract): what two stages share lives in a lower layer. The order
of the stages is :mod:`lorabuild.pipeline`'s business, not theirs.
"""
