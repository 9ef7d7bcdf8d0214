"""salad-lightning: SALAD (Self-Assessment Learning for Action Detection) in Lightning + Hydra.

Importing the package is cheap on purpose (no torch import here), so that the
evaluation command starts fast.
"""

__version__ = "0.1.0"
