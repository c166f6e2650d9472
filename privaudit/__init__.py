"""privaudit: audit image-to-image translation models for membership leakage and harden them."""

__version__ = "0.1.0"
