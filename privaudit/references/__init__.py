"""Reference (shadow) models that replay a model's recorded recipe, and their manifest.

``read_recipe`` reads how a model was made (``recipe``); ``build_references`` trains K references
on samples of population data and writes ``references.json`` (``build``; the library entry of
``privaudit references``); ``load_references`` validates a references folder against the audited
model and gives the calibrated attacks their (N, K) losses and IN mask (``load``).
"""

from privaudit.references.build import MANIFEST, MANIFEST_SCHEMA, BuildResult, balanced_assignment, build_references
from privaudit.references.load import ATTACKS, Reference, References, load_references, read_manifest
from privaudit.references.recipe import Recipe, RecipeFlags, TrainingSet, read_recipe

__all__ = ["ATTACKS", "MANIFEST", "MANIFEST_SCHEMA", "BuildResult", "Recipe", "RecipeFlags", "Reference", "References", "TrainingSet", "balanced_assignment",
           "build_references", "load_references", "read_manifest", "read_recipe"]
