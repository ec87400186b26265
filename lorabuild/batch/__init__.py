"""Many builds at once: a queue, a GNU Makefile, a Slurm array.

- :mod:`~lorabuild.batch.queue`: ``lorabuild run a.toml b.toml ...`` and ``queue.sh``/``queue.ps1``.
- :mod:`~lorabuild.batch.makefile`: ``lorabuild makefile`` and ``python -m lorabuild.batch.makefile``.
- :mod:`~lorabuild.batch.slurm`: ``lorabuild compile --target slurm``.

May import: :mod:`lorabuild.pipeline` and the layers below it. Keep this file free of imports: the
Makefile's ``python -m lorabuild.batch.makefile`` must start in a fraction of a second.
"""
