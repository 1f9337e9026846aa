"""The link between the halves: its key, its handshake, its sessions, the WSL2 half's warm pool."""
