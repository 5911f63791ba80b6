"""The package version, in a leaf module so that modules can import it without importing the package."""

__version__ = "0.3.0"
