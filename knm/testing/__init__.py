"""Test servers standing in for systems that cannot run on these machines (a Contrail
controller, a vrouter agent). They enforce the real systems' rules so that knm's clients
are tested against those rules; they are test servers, not implementations."""
