"""HDM: hybrid diffusion model for image anomaly detection (DAGM + DDM + POM).

Kept import-light on purpose: `hdm --help` and the services import submodules
(`hdm.inference`, `hdm.checkpoint`, ...) only where they need them.
"""

__version__ = "0.1.0"
