"""The pinned kohya sd-scripts' interface: what lorabuild knows about kohya, and the one process seam.

- :mod:`~lorabuild.kohya.families`: the model families (SD1.x to Lumina 2), one module each, and their
  registry: each family's scripts, networks, model header, defaults, grid renderer, card and own rules.
- :mod:`~lorabuild.kohya.options`: the options kohya accepts (``lorabuild/data/kohya_options.json``) and
  checks of values against them.
- :mod:`~lorabuild.kohya.launch`: the launch command as data (:class:`LaunchSpec`).
- :mod:`~lorabuild.kohya.config`: ``--config_file`` and ``--dataset_config`` as typed values, and the one
  place they become TOML tables.
- :mod:`~lorabuild.kohya.prompts`: the one writer of kohya's prompt-line syntax (``sample_prompts.txt``,
  gen_img's ``--from_file``, flux_minimal_inference's stdin) and what a prompt may hold to survive it.
- :mod:`~lorabuild.kohya.buckets`: kohya's aspect-ratio bucketing and step counting, reimplemented.
- :mod:`~lorabuild.kohya.outputs`: how kohya names what a training run saves, and how a run resumes.
- :mod:`~lorabuild.kohya.gridrender`: the grid renderer seam's vocabulary: the job a renderer is
  given (images, LoRA files) and the run it returns (command, inputs, progress, stdin answers).
- :mod:`~lorabuild.kohya.genimg`: ``gen_img.py`` as the SD families' grid renderer.
- :mod:`~lorabuild.kohya.interactive`: the ``--interactive`` renderers' shared half: one model load,
  a stdin line per image as kohya asks, each saved image filed at once.
- :mod:`~lorabuild.kohya.fluxinfer`: ``flux_minimal_inference.py --interactive`` as the FLUX.1/Chroma
  grid renderer, fed one line per image as it asks; :mod:`~lorabuild.kohya.sd3infer` (SD3) and
  :mod:`~lorabuild.kohya.luminainfer` (Lumina 2) are the same kind.
- :mod:`~lorabuild.kohya.runner`: the one place lorabuild starts processes.
- :mod:`~lorabuild.kohya.scriptrun`: one run of a kohya script (trainer, gen_img, tagger): its output's
  tail kept, its failure, interruption or missing files worded, naming the script that ran.
- :mod:`~lorabuild.kohya.progress`: kohya's progress output, parsed and shown.
- :mod:`~lorabuild.kohya.diagnose`: known ways a kohya run fails, each as one sentence and a fix.
- :mod:`~lorabuild.kohya.tagger`: kohya's WD14 tagger (``[captions.autotag]``): its model folder, command
  lines, output and cache key.
- :mod:`~lorabuild.kohya.tagging`: the tagger run on the images that need tags, cached by content.
- :mod:`~lorabuild.kohya.clipscore`: a script kohya's Python runs: pictures and prompts embedded with
  the user's own CLIP folder, scored by an aesthetic head (``[pick] clip_model``, ``aesthetic_model``).

May import: :mod:`lorabuild.recipe` and the layers below it. Nothing here knows the plan or the build
folder's layout; kohya's Python stack (torch...) is never imported, only run in kohya's processes.
"""
