"""The agent's Linux side: netlink and nftables on the node it runs on."""
