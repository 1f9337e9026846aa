"""What the Windows half needs of Windows: adapters, the LocalAPI, the firewall, elevation,
and parsers for the output of Windows' own tools (portable, so Linux tests feed samples)."""
