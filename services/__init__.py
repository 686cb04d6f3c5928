"""knm's services. Each is independent of the others; all share `knm.core`."""
