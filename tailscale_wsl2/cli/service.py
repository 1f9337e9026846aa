"""`install`, `uninstall`, `status`, `logs`: each half started by the system, and seen running.

Thin commands, in the manner of app.py, over install/ (the plans and what is installed),
serve/state.py (what runs) and cli/status.py (the report). `install` takes `up`'s options and
records the ones given, so the service runs `up` as the user would have. The side is the one
`up` would run (`--side` forces it). The system is reached through the module-level functions
`wsl_host`, `windows_host`, `local_system` and `running_state`, which tests replace.

`up --log-file PATH` (the option and its set-up are here, next to what uses it) logs to a
size-bounded rotating file instead of the terminal: a service started at boot or logon has no
terminal, and the windowless Windows copy has no standard streams at all (its standard error
then goes to the log file too, so that a one-line error or a traceback is not lost).
"""

import io
import logging
import os
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from tailscale_wsl2.cli.common import (
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_SOCKET_MODE_TEXT,
    HostIpOption,
    InsecureOption,
    KeyFileOption,
    ListenOption,
    MaxConnectionsOption,
    PortOption,
    SideChoice,
    SideOption,
    SocketModeOption,
    SocketOption,
    UpstreamOption,
    VerboseOption,
    configure_logging,
    run_reporting_errors,
)
from tailscale_wsl2.errors import ActionableError
from tailscale_wsl2.facts import DEFAULT_PORT, DEFAULT_SOCKET, DEFAULT_SOCKET_MODE, PROGRAM

if TYPE_CHECKING:
    from tailscale_wsl2.install.apply import System
    from tailscale_wsl2.install.plan import InstallPlan, WslProgram
    from tailscale_wsl2.install.running import RunningCopy
    from tailscale_wsl2.install.status import Installation
    from tailscale_wsl2.install.windows_side import WindowsHost
    from tailscale_wsl2.install.wsl_side import WslHost
    from tailscale_wsl2.serve.state import HalfName, RunState

__all__ = [
    "LogFileOption",
    "local_system",
    "register",
    "running_state",
    "start_logging",
    "windows_host",
    "wsl_host",
]

DEFAULT_LOG_LINES = 50

LogFileOption = Annotated[
    Path | None,
    typer.Option(
        help="Log to this file instead of the terminal (rotated at 1 MiB, 3 older files kept)."
    ),
]
DryRunOption = Annotated[
    bool,
    typer.Option(
        "--dry-run", help="Print every file it would write and every command it would run."
    ),
]
ForceOption = Annotated[
    bool,
    typer.Option(
        help="Replace or remove a unit or task that install did not write (or that was edited)."
    ),
]
WindowsExeOption = Annotated[
    str | None,
    typer.Option(
        help="The release's tailscale-wsl2.exe; from WSL2 its install (or uninstall) runs too, "
        "through interop, so one command sets up both sides."
    ),
]


# --- up --log-file -----------------------------------------------------------------------------


def start_logging(verbose: bool, log_file: Path | None) -> None:
    """Log to the terminal, or to `log_file` with size-bounded rotation."""
    if log_file is None:
        configure_logging(verbose)
        return
    from tailscale_wsl2.install.paths import rotating_log_handler  # noqa: PLC0415

    try:
        handler = rotating_log_handler(log_file.absolute())
        # The handler opens the file at its first line; a path it cannot write (a folder,
        # no permission) would then print a traceback per line instead of this one.
        with log_file.open("a", encoding="utf-8"):
            pass
    except (FileExistsError, NotADirectoryError):  # a file where a folder of the path should be
        raise ActionableError(
            f"cannot write the log {log_file}: a file stands where a folder of its path should",
            "pass a --log-file in a folder you may write to",
        ) from None
    except IsADirectoryError:
        raise ActionableError(
            f"the log {log_file} is a folder",
            f"pass a file in it: --log-file {log_file / 'tailscale-wsl2.log'}",
        ) from None
    except OSError as exc:
        raise ActionableError(
            f"cannot write the log {log_file}: {exc.strerror}",
            "pass a --log-file in a folder you may write to",
        ) from None
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])
    if sys.stderr is None:
        # No terminal at all: the one-line error (and a bug's traceback) go to the log too.
        sys.stderr = _AppendingStream(log_file.absolute())


class _AppendingStream(io.TextIOBase):
    """Standard error for a program that has none (the windowless Windows copy): each write
    appended to the log file and the file closed again, so that rotation can rename it."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self._path.open("a", encoding="utf-8") as log:
            log.write(text)
        return len(text)


# --- the system, as seams ----------------------------------------------------------------------


def _euid() -> int | None:
    return os.geteuid() if hasattr(os, "geteuid") else None


def running_state(half: str) -> "tuple[RunState | None, RunState | None]":
    """(the running half's state, or None; a state left by a half that has exited, or None)."""
    from tailscale_wsl2.serve.state import is_running, read_state, state_paths_to_read  # noqa: PLC0415

    stale = None
    name: HalfName = "windows" if half == "windows" else "wsl"
    for path in state_paths_to_read(name, platform=sys.platform, environ=os.environ, euid=_euid()):
        try:
            state = read_state(path)
        except ValueError:
            continue  # another version's, or damaged: the half rewrites it on its next change
        if state is not None and is_running(state):
            return state, None
        stale = stale or state
    return None, stale


def _running_copy(half: str) -> "RunningCopy | None":
    from tailscale_wsl2.install.running import RunningCopy  # noqa: PLC0415

    state, _ = running_state(half)
    return None if state is None else RunningCopy(state.pid, state.executable, state.arguments)


def _read_bytes(path: str) -> bytes | None:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ActionableError(f"cannot read {path}: {exc.strerror}", "run it with sudo") from None


def _this_wsl_program() -> "WslProgram":
    from tailscale_wsl2.install.plan import RUN_AS_MODULE, WslProgram  # noqa: PLC0415

    if getattr(sys, "frozen", False):
        return WslProgram((sys.executable,), frozen=True)
    return WslProgram((sys.executable, *RUN_AS_MODULE), frozen=False)


def wsl_host() -> "WslHost":
    from tailscale_wsl2.install.wsl_side import WslHost  # noqa: PLC0415
    from tailscale_wsl2.system import run_command  # noqa: PLC0415
    from tailscale_wsl2.wsl.side import Side, read_side  # noqa: PLC0415

    return WslHost(
        read_bytes=_read_bytes,
        exists=os.path.exists,
        run=run_command,
        euid=_euid() or 0,
        environ=os.environ,
        wsl1=read_side() is Side.WSL1,
        program=_this_wsl_program(),
        running=_running_copy("wsl"),
    )


def windows_host(windows_exe: str | None) -> "WindowsHost":
    from tailscale_wsl2.install.windows_side import WindowsHost  # noqa: PLC0415
    from tailscale_wsl2.plan.lookups import system_discoverers  # noqa: PLC0415
    from tailscale_wsl2.system import run_command  # noqa: PLC0415
    from tailscale_wsl2.windows.firewall import running_image  # noqa: PLC0415
    from tailscale_wsl2.wsl.side import Side  # noqa: PLC0415

    frozen = sys.executable if getattr(sys, "frozen", False) else None
    return WindowsHost(
        environ=os.environ,
        run=run_command,
        executable=windows_exe or frozen,
        running=_running_copy("windows"),
        discoverers=system_discoverers(Side.WINDOWS),
        python=sys.executable,
        image=running_image(),
        exists=os.path.exists,
    )


def local_system() -> "System":
    from tailscale_wsl2.install.apply import LocalSystem  # noqa: PLC0415

    return LocalSystem()


# --- shared by the commands --------------------------------------------------------------------


def _half(side: SideChoice | None) -> str:
    from tailscale_wsl2.plan.halves import Options, half_for  # noqa: PLC0415
    from tailscale_wsl2.wsl.side import read_side  # noqa: PLC0415

    return half_for(Options(side=side.value if side else None), read_side())


def _check_platform(half: str, verb: str) -> None:
    """Each half is installed where it runs: Windows' on Windows, WSL2's in Linux."""
    if half == "windows" and sys.platform != "win32":
        raise ActionableError(
            f"the Windows half is {verb}ed on Windows",
            # Only what works when copied: --windows-exe needs a path only the user knows.
            f"run `tailscale-wsl2.exe {verb}` in Windows (from WSL2, {verb}'s --windows-exe "
            "option takes the .exe's path)",
        )
    if half == "wsl" and sys.platform == "win32":
        raise ActionableError(
            f"the WSL2 half is {verb}ed inside WSL2", f"run `sudo tailscale-wsl2 {verb}` in WSL2"
        )


def _up_options(
    side: SideChoice | None,
    port: int,
    listen: str | None,
    host_ip: str | None,
    socket: Path,
    socket_mode: int,
    upstream: str | None,
    key_file: Path | None,
    insecure_no_auth: bool,
    max_connections: int,
) -> tuple[str, ...]:
    """The `up` options the user gave, as words: what the installed service runs with."""
    given: list[tuple[str, object, object]] = [
        ("--side", side.value if side else None, None),
        ("--port", port, DEFAULT_PORT),
        ("--listen", listen, None),
        ("--host-ip", host_ip, None),
        # Absolute: a service does not start in the folder install ran in.
        ("--socket", None if socket == DEFAULT_SOCKET else socket.absolute(), None),
        ("--socket-mode", f"{socket_mode:04o}", f"{DEFAULT_SOCKET_MODE:04o}"),
        ("--upstream", upstream, None),
        ("--key-file", key_file.absolute() if key_file else None, None),
        ("--max-connections", max_connections, DEFAULT_MAX_CONNECTIONS),
    ]
    words = [
        word for name, value, default in given if value != default for word in (name, str(value))
    ]
    return (*words, *(["--insecure-no-auth"] if insecure_no_auth else []))


def _flags(**flags: bool) -> tuple[str, ...]:
    return tuple(f"--{name.replace('_', '-')}" for name, on in flags.items() if on)


def _carry_out(plan: "InstallPlan", dry_run: bool, done: Callable[[], str]) -> str:
    from tailscale_wsl2.install.apply import apply_plan  # noqa: PLC0415
    from tailscale_wsl2.install.plan import render_dry_run  # noqa: PLC0415

    if dry_run:
        return render_dry_run(plan)
    notes = "".join(f"note: {note}\n" for note in plan.notes)
    if not plan.steps:
        return notes
    apply_plan(plan, local_system())
    return f"{notes}{done()}\n"


def _preview_on_windows(command: tuple[str, ...] | None) -> None:
    """With --dry-run and --windows-exe: the .exe's own dry run, which changes nothing."""
    if command is None:
        return
    preview = (*command, "--dry-run")
    typer.echo(f"--- on Windows: {shlex.join(preview)} ---")
    status = local_system().run(preview)
    typer.echo(f"--- end of the Windows half's dry run (exit status {status}) ---")


def _wsl_installation() -> "Installation":
    from tailscale_wsl2.install.paths import WSL_UNIT  # noqa: PLC0415
    from tailscale_wsl2.install.status import wsl_installation  # noqa: PLC0415
    from tailscale_wsl2.install.wslconf import WSL_CONF  # noqa: PLC0415

    def text(path: str) -> str | None:
        data = _read_bytes(path)
        return None if data is None else data.decode("utf-8", "surrogateescape")

    return wsl_installation(text(WSL_UNIT), text(WSL_CONF))


def _windows_installation() -> "Installation":
    from tailscale_wsl2.install.status import Installation, windows_installation  # noqa: PLC0415
    from tailscale_wsl2.install.windows_side import read_windows_facts  # noqa: PLC0415

    if sys.platform != "win32":
        return Installation(None, problem="the logon task can be checked on Windows only")
    facts = read_windows_facts(windows_host(None))
    return windows_installation(facts.existing_task_xml, os.environ)


def _installation(half: str) -> "Installation":
    return _windows_installation() if half == "windows" else _wsl_installation()


# --- install -----------------------------------------------------------------------------------


def install(
    side: SideOption = None,
    port: PortOption = DEFAULT_PORT,
    listen: ListenOption = None,
    host_ip: HostIpOption = None,
    socket: SocketOption = DEFAULT_SOCKET,
    socket_mode: SocketModeOption = DEFAULT_SOCKET_MODE_TEXT,
    upstream: UpstreamOption = None,
    key_file: KeyFileOption = None,
    insecure_no_auth: InsecureOption = False,
    max_connections: MaxConnectionsOption = DEFAULT_MAX_CONNECTIONS,
    dry_run: DryRunOption = False,
    force: ForceOption = False,
    disable_tailscaled: Annotated[
        bool,
        typer.Option(
            help="WSL2: stop and disable the tailscale package's tailscaled, which "
            "would serve the same socket."
        ),
    ] = False,
    windows_exe: WindowsExeOption = None,
    verbose: VerboseOption = False,
) -> None:
    mode = int(socket_mode, 8)  # checked as it was parsed (cli/common.py)
    up_options = _up_options(
        side,
        port,
        listen,
        host_ip,
        socket,
        mode,
        upstream,
        key_file,
        insecure_no_auth,
        max_connections,
    )

    def on_this_side() -> str:
        half = _half(side)
        _check_platform(half, "install")
        if half == "windows":
            return _install_windows(
                up_options,
                port,
                listen,
                upstream,
                key_file,
                insecure_no_auth,
                windows_exe,
                force=force,
                dry_run=dry_run,
            )
        words_for_windows = (
            *_windows_words_from_wsl(
                side, port, listen, host_ip, upstream, key_file, insecure_no_auth
            ),
            *_flags(force=force),
        )
        command = (
            "install",
            *up_options,
            *_flags(force=force, disable_tailscaled=disable_tailscaled),
            *(["--windows-exe", windows_exe] if windows_exe else []),
        )
        return _install_wsl(
            command,
            up_options,
            key_file,
            insecure_no_auth,
            windows_exe,
            words_for_windows,
            force=force,
            disable_tailscaled=disable_tailscaled,
            dry_run=dry_run,
        )

    typer.echo(run_reporting_errors(verbose, on_this_side), nl=False)


def _windows_words_from_wsl(
    side: SideChoice | None,
    port: int,
    listen: str | None,
    host_ip: str | None,
    upstream: str | None,
    key_file: Path | None,
    insecure: bool,
) -> list[str]:
    """The options of `install --windows-exe` for the Windows half's own install: the same
    translation as the fixes printed in WSL2 (the key file as Windows names it, a loopback
    host address as `--listen`), so that the two halves agree."""
    from tailscale_wsl2.plan.commands import windows_words_from_wsl  # noqa: PLC0415
    from tailscale_wsl2.plan.halves import Options, parse_upstream_option  # noqa: PLC0415

    options = Options(
        side=side.value if side else None,
        port=port,
        listen=listen,
        host_ip=host_ip,
        upstream=parse_upstream_option(upstream),
        key_file=key_file.absolute() if key_file else None,
        insecure_no_auth=insecure,
    )
    return windows_words_from_wsl(options)


def _windows_command(
    windows_exe: str | None, verb: str, words: tuple[str, ...]
) -> tuple[str, ...] | None:
    if windows_exe is None:
        return None
    from tailscale_wsl2.install.wsl_side import check_windows_exe  # noqa: PLC0415

    check_windows_exe(windows_exe, os.path.exists)
    return (os.path.abspath(windows_exe), verb, *words)


def _install_wsl(
    command: tuple[str, ...],
    up_options: tuple[str, ...],
    key_file: Path | None,
    insecure: bool,
    windows_exe: str | None,
    words_for_windows: tuple[str, ...],
    *,
    force: bool,
    disable_tailscaled: bool,
    dry_run: bool,
) -> str:
    from tailscale_wsl2.install import wsl_side  # noqa: PLC0415

    windows_command = _windows_command(windows_exe, "install", words_for_windows)
    request = wsl_side.WslRequest(
        command=command,
        up_options=up_options,
        key_file=key_file.absolute() if key_file else None,
        insecure=insecure,
        force=force,
        disable_tailscaled=disable_tailscaled,
        dry_run=dry_run,
        windows_command=windows_command,
    )
    plan = wsl_side.plan_install(request, wsl_host())
    if dry_run:
        _preview_on_windows(windows_command)

    def done() -> str:
        how = _wsl_installation().how or "nothing (see the notes)"
        return f"installed: the WSL2 half, started by {how}; `{PROGRAM} status` shows it"

    return _carry_out(plan, dry_run, done)


def _install_windows(
    up_options: tuple[str, ...],
    port: int,
    listen: str | None,
    upstream: str | None,
    key_file: Path | None,
    insecure: bool,
    windows_exe: str | None,
    *,
    force: bool,
    dry_run: bool,
) -> str:
    from tailscale_wsl2.install import windows_side  # noqa: PLC0415
    from tailscale_wsl2.plan.halves import Options, parse_upstream_option  # noqa: PLC0415

    options = Options(
        side="windows",
        port=port,
        listen=listen,
        upstream=parse_upstream_option(upstream),
        key_file=key_file,
        insecure_no_auth=insecure,
    )
    plan = windows_side.plan_install(options, up_options, windows_host(windows_exe), force=force)
    return _carry_out(
        plan,
        dry_run,
        lambda: (
            f"installed: the Windows half, started now and at each logon by the logon task "
            f"tailscale-wsl2; `{PROGRAM}.exe status` shows it"
        ),
    )


# --- uninstall ---------------------------------------------------------------------------------


def uninstall(
    side: SideOption = None,
    purge: Annotated[
        bool, typer.Option(help="Also remove the link key and the logs (kept by default).")
    ] = False,
    force: ForceOption = False,
    dry_run: DryRunOption = False,
    windows_exe: WindowsExeOption = None,
    verbose: VerboseOption = False,
) -> None:
    def on_this_side() -> str:
        half = _half(side)
        _check_platform(half, "uninstall")
        if half == "windows":
            from tailscale_wsl2.install import windows_side  # noqa: PLC0415

            host = windows_host(windows_exe)
            plan = windows_side.plan_uninstall(host, force=force, purge=purge)
            kept = "" if purge else "; the link key is kept (`uninstall --purge` removes it)"
            return _carry_out(plan, dry_run, lambda: f"uninstalled the Windows half{kept}")
        from tailscale_wsl2.install import wsl_side  # noqa: PLC0415

        words = _flags(purge=purge, force=force)
        windows_command = _windows_command(windows_exe, "uninstall", words)
        command = ("uninstall", *words, *(["--windows-exe", windows_exe] if windows_exe else []))
        request = wsl_side.WslRequest(
            command=command,
            force=force,
            purge=purge,
            dry_run=dry_run,
            windows_command=windows_command,
        )
        plan = wsl_side.plan_uninstall(request, wsl_host())
        if dry_run:
            _preview_on_windows(windows_command)
        return _carry_out(plan, dry_run, lambda: "uninstalled the WSL2 half")

    typer.echo(run_reporting_errors(verbose, on_this_side), nl=False)


# --- status ------------------------------------------------------------------------------------


def status(
    side: SideOption = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the status as one JSON document.")
    ] = False,
    verbose: VerboseOption = False,
) -> None:
    from tailscale_wsl2.cli.status import StatusReport, render_json, render_text  # noqa: PLC0415

    def report() -> StatusReport:
        half = _half(side)
        running, stale = running_state(half)
        return StatusReport(half, _installation(half), running, stale)

    found = run_reporting_errors(verbose, report)
    typer.echo(render_json(found) if json_output else render_text(found), nl=False)
    raise typer.Exit(0 if found.healthy else 1)


# --- logs --------------------------------------------------------------------------------------


def _journalctl() -> str | None:
    from tailscale_wsl2.install.logs import JOURNALCTL_CANDIDATES  # noqa: PLC0415
    from tailscale_wsl2.system import find_first  # noqa: PLC0415

    return find_first(JOURNALCTL_CANDIDATES, os.path.exists)


def _log_source(half: str) -> tuple[list[str] | None, Path | None]:
    """(the journalctl command line, or the log file): where this side's log is."""
    from tailscale_wsl2.cli.status import StatusReport  # noqa: PLC0415
    from tailscale_wsl2.install.status import JOURNAL_COMMAND  # noqa: PLC0415

    running, stale = running_state(half)
    report = StatusReport(half, _installation(half), running, stale)
    if report.log == JOURNAL_COMMAND:
        journalctl = _journalctl()
        if journalctl is None:
            raise ActionableError(
                "the service logs to the journal, and journalctl is in neither /usr/bin nor /bin",
                "install it with `sudo apt-get install systemd`",
            )
        return [journalctl], None
    if report.log is None:
        raise ActionableError(
            "this half is not installed, and no running half writes a log file: a half started "
            "by hand logs to the terminal that started it",
            f"install it (`{PROGRAM} install`), or start `up` with --log-file PATH",
        )
    return None, Path(report.log)


def logs(
    side: SideOption = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing what is added (Ctrl+C stops).")
    ] = False,
    lines: Annotated[
        int, typer.Option("--lines", "-n", min=0, help="How many of the last lines to print.")
    ] = DEFAULT_LOG_LINES,
    verbose: VerboseOption = False,
) -> None:
    from tailscale_wsl2.install.logs import follow_log, journal_argv, last_lines  # noqa: PLC0415

    journal, log_file = run_reporting_errors(verbose, lambda: _log_source(_half(side)))
    try:
        if journal is not None:
            raise typer.Exit(local_system().run(journal_argv(journal[0], lines, follow)))
        assert log_file is not None
        for line in last_lines(log_file, lines):
            typer.echo(line)
        if follow:
            follow_log(log_file, lambda text: typer.echo(text, nl=False), time.sleep)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


# --- registration ------------------------------------------------------------------------------


def register(app: typer.Typer) -> None:
    """Add the commands to the program's group (cli/app.py calls this once)."""
    app.command(
        help="Install this side's half so that it starts by itself (Windows: at logon; WSL2: "
        "at WSL's start) and runs now; run again to upgrade. Takes `up`'s options.",
        short_help="Install this side's half: it starts at boot or logon.",
    )(install)
    app.command(
        help="Stop this side's installed half and remove what install wrote.",
        short_help="Stop this side's installed half; remove what install wrote.",
    )(uninstall)
    app.command(
        help="Installed or not, running or not, and the next hop's health as the running half "
        "sees it. Exit status 0 only when running and healthy.",
        short_help="Installed or not, running or not, healthy or not.",
    )(status)
    app.command(
        help="Show this side's log (the journal, or the log file).",
        short_help="Show this side's log.",
    )(logs)
