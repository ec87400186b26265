"""Many builds at once: a queue, a GNU Makefile, a Slurm array.

- :mod:`~lorabuild.batch.queue`: ``lorabuild run a.toml b.toml ...`` and ``queue.sh``/``queue.ps1``.
- :mod:`~lorabuild.batch.makegen`: ``lorabuild makefile``, the Makefile's generator.
- :mod:`~lorabuild.batch.makefile`: ``python -m lorabuild.batch.makefile``, the helper every ``make`` runs.
- :mod:`~lorabuild.batch.slurm`: ``lorabuild compile --target slurm``.

All three load their recipe files with :func:`lorabuild.recipe.many.load_many`, so they agree on
which builds clash. May import: :mod:`lorabuild.pipeline` and the layers below it. Keep this file
free of imports: the Makefile's ``python -m lorabuild.batch.makefile`` must start fast.
"""
