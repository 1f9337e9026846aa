"""What `tailscale-wsl2 install` and `uninstall` write and run, decided by pure functions.

Starting each half by hand after every reboot is the chore `install` removes: in WSL2 a systemd
unit (or, without systemd, a `[boot] command` in /etc/wsl.conf), on Windows a per-user logon
task. Every module here turns values (paths, arguments, the text of an existing file) into
values (the text to write, the argv to run), so that tests feed them real-world samples; `plan`
gathers the results into one `InstallPlan` that `--dry-run` prints and `apply` carries out.
"""
