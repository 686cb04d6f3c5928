"""The agent's contrail mode: pods wired as usual, their ports registered with the node's
Contrail vrouter agent."""
