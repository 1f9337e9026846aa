# An absolute import: PyInstaller runs this file as a script, not as a module.
from tailscale_wsl2.tuning.onefile import onefile_lifecycle

# First of all, before the command line's imports: the sooner a one-file child marks its
# extraction directory and follows its bootloader, the shorter the time a kill leaves behind.
with onefile_lifecycle():
    from tailscale_wsl2.cli.app import main

    main()
