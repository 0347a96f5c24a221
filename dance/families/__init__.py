"""The built-in codec families; importing this package registers them (`dance.models`)."""
from . import dance, hyperprior  # noqa: F401
