"""The version of lth_jax, written into exported tickets and reported by the package."""

__version__ = '0.1.0'
