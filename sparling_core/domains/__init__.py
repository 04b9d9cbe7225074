"""Domains: datasets with ground-truth motifs, behind one interface (`base.Domain`) and a
registry (`get_domain(name)`). Importing this package registers the built-in domains."""

from .base import (
    DEFAULT_DOMAIN,
    SPLITS,
    Domain,
    Motif,
    Sample,
    domain_names,
    get_domain,
    register,
    register_factory,
)
from .digit_circle import DigitCircle
from .latex_ocr import LatexOCR

__all__ = [
    "DEFAULT_DOMAIN",
    "SPLITS",
    "DigitCircle",
    "Domain",
    "LatexOCR",
    "Motif",
    "Sample",
    "domain_names",
    "get_domain",
    "register",
    "register_factory",
]
