"""``lorabuild import``: other tools' configs and scripts turned into recipes.

May import: :mod:`lorabuild.plan`, :mod:`lorabuild.probe`, :mod:`lorabuild.kohya`, :mod:`lorabuild.recipe`
and the layers below them.
"""
