# An absolute import: PyInstaller runs this file as a script, not as a module.
from tailscale_wsl2.cli.app import main

main()
