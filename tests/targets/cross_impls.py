"""Impls of two patches in one module that imports the second patch's target itself, as
an impl subclassing a class of that target must."""

import targets.second_target  # noqa: F401  (the import under test)
from targets.sample_impls import shout

shout_greet = shout
shout_wave = shout
