"""Hardware: YAML schema, loading and validation, presets, closed-form component models.

Also the project's base, imported by every package: the error types (``errors``) and defensive
reading of user files with atomic writing of results (``safeio``). Imports nothing of this project.
"""

from .errors import HetmoeError, SpecError
from .loader import list_presets, load_chip, load_chip_text
from .spec import ChipSpec

__all__ = ["ChipSpec", "HetmoeError", "SpecError", "list_presets", "load_chip", "load_chip_text"]
