"""Domains: datasets with ground-truth motifs, behind one interface (`base.Domain`) and a
registry (`get_domain(name)`). Importing this package registers the built-in domains and the
"folder:/path" prefix (your own data, `folder.FolderDomain`)."""

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
    register_prefix,
)
from .digit_circle import DigitCircle
from .folder import FolderDomain, FolderError, load_folder
from .latex_ocr import LatexOCR

__all__ = [
    "DEFAULT_DOMAIN",
    "SPLITS",
    "DigitCircle",
    "Domain",
    "FolderDomain",
    "FolderError",
    "LatexOCR",
    "Motif",
    "Sample",
    "domain_names",
    "get_domain",
    "load_folder",
    "register",
    "register_factory",
    "register_prefix",
]
