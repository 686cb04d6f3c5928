"""The network rules as pure functions over plain data: no clock, no I/O."""
