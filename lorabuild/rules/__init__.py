"""The pre-flight rules: every trap kohya would only find after loading the model.

Each rule is one small function registered with :func:`rule`. A rule reads the validated
recipe and the probed facts and yields problems (errors or warnings) with the recipe key they
belong to; :func:`run_rules` runs them all so the user sees every problem at once. Rules that
mirror a kohya failure name the kohya message or behaviour they prevent.

- :mod:`~lorabuild.rules.registry`: :func:`rule`, :func:`subset_rule` (a rule that reads the planned
  subsets), :data:`RULES` and :func:`run_rules`.
- :mod:`~lorabuild.rules.model`: the base model, its VAE and tokenizers, the build's output name.
- :mod:`~lorabuild.rules.dataset`: resolution and buckets, source folders, images, caption files.
- :mod:`~lorabuild.rules.cutout`: the segmentation model of ``[images.remove_background]``.
- :mod:`~lorabuild.rules.training`: the network (and its starting weights), the optimizer and schedule,
  the training settings.
- :mod:`~lorabuild.rules.evaluate`: the prompts kohya samples and the grid renders, the grid's epochs.
- :mod:`~lorabuild.rules.pick`: the user's own scoring weights (a CLIP folder, an aesthetic head).
- :mod:`~lorabuild.rules.passthrough`: raw ``[kohya]`` options and their text.
- :mod:`~lorabuild.rules.captions`: the caption rules' patterns and the WD14 tagger.
- :mod:`~lorabuild.rules.launch`: DeepSpeed, the launch scripts' values, multi-GPU on Windows.

The topic modules are imported below in the order their rules run, which is the order
``lorabuild check`` prints their problems in.

May import: :mod:`lorabuild.plan` and the layers below it (not :mod:`lorabuild.build`). Rules read
the recipe and :class:`~lorabuild.probe.facts.Facts` and never touch the disk.
"""

# isort: off
# Each topic module registers its rules as it is imported: this order is the order the rules run
# in, and so the order `lorabuild check` prints their problems in.
from lorabuild.rules import model, dataset, cutout, training, evaluate, pick, passthrough, captions, launch  # noqa: F401

# isort: on
from lorabuild.rules.registry import RULES, Rule, SubsetRule, rule, run_rules, subset_rule

__all__ = ["RULES", "Rule", "SubsetRule", "rule", "run_rules", "subset_rule"]
