"""knm: a Kubernetes network manager."""

__version__ = "0.1.0"
