"""Hardware: YAML schema, loading and validation, presets, closed-form component models."""

from .errors import HetmoeError, SpecError
from .loader import list_presets, load_chip, load_chip_text
from .spec import ChipSpec

__all__ = ["ChipSpec", "HetmoeError", "SpecError", "list_presets", "load_chip", "load_chip_text"]
