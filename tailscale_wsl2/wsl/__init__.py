"""What a Linux side learns of WSL: which side this is, its networking mode, the Windows host."""
