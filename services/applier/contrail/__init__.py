"""The `contrail` applier backend: knm's model as objects of Contrail's VNC config API."""
