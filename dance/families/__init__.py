"""The built-in codec families; importing this package registers them (`dance.models`)."""
from . import cs, dance, hyperprior, slimmable, walloc  # noqa: F401
