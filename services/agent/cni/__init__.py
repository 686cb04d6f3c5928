"""CNI: the `knm-cni` plugin the runtime executes and the agent's socket it talks to.

The plugin's modules (`plugin`, `spec`, `protocol`) import only the standard library:
the runtime starts the plugin once per ADD, CHECK and DEL, so its start-up is on every
pod's critical path.
"""
