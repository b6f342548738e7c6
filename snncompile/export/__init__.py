"""Exporters: the SNN out of snncompile and back in (NIR: ``export_nir``, ``to_nir``, ``from_nir``)."""
from .nir import CONVENTIONS, NIR_VERSIONS, export_nir, from_nir, to_nir

__all__ = ["export_nir", "to_nir", "from_nir", "NIR_VERSIONS", "CONVENTIONS"]
