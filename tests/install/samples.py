"""wsl.conf files as they exist on real systems, and Task Scheduler output as Windows prints it.

The wsl.conf texts follow what distributions ship and what Microsoft's documentation and common
fixes tell users to write: Ubuntu's image turns on systemd and its first start adds the default
user; the usual DNS fix turns off resolv.conf generation; files saved by Windows editors have
CRLF line ends; INI habits bring `;` comments, which WSL does not accept.
"""

# Ubuntu's WSL image (22.04 and later) ships exactly this.
UBUNTU_SHIPPED = "[boot]\nsystemd=true\n"

# ... and its first start adds the user it created.
UBUNTU_WITH_USER = "[boot]\nsystemd=true\n\n[user]\ndefault=alice\n"

# The fix people apply for a VPN's DNS: written by hand, spaces around `=`.
NETWORK_FIX = "[network]\ngenerateResolvConf = false\n"

# The same, saved with Notepad on the Windows side (\\wsl$\...): CRLF line ends.
CRLF_FILE = (
    "[network]\r\ngenerateResolvConf = false\r\n\r\n[interop]\r\nappendWindowsPath = false\r\n"
)

# After Microsoft's documented example: comments, quoted options, several sections,
# Docker started by the boot command.
DOCUMENTED_EXAMPLE = """\
# Automatically mount Windows drive when the distribution is launched
[automount]

# Set to true will automount fixed drives (C:/ or D:/) with DrvFs under the root directory.
enabled = true

# Sets the directory where fixed drives will be automatically mounted.
root = /mnt/

# DrvFs-specific options can be specified.
options = "metadata,uid=1003,gid=1003,umask=077,fmask=11,case=off"

# Network host settings that enable the DNS server used by WSL 2.
[network]
hostname = DemoHost
generateHosts = false
generateResolvConf = false

# Set whether WSL supports interop processes like launching Windows apps.
[interop]
enabled = false
appendWindowsPath = false

# Set the user when launching a distribution with WSL.
[user]
default = DemoUser

# Set a command to run when a new WSL instance launches.
[boot]
command = service docker start
"""

# Someone else's boot command with a trailing comment, in a file without a final newline.
DOCKER_WITH_COMMENT = "[boot]\ncommand = service docker start   # start Docker\n[user]\ndefault=bob"

# INI habit: a `;` comment. WSL stops reading the file at line 3.
SEMICOLON_COMMENT = "[boot]\nsystemd=true\n; the default user\n[user]\ndefault=carol\n"

# WSL 1 users, and anyone who turned systemd off.
SYSTEMD_OFF = "[boot]\nsystemd = false\n[interop]\nappendWindowsPath=false\n"

# Keys in another case: WSL compares section and key names without case.
CAPITALISED = "[Boot]\nSystemd=False\nCommand=/usr/sbin/sshd\n"

EDITABLE = {
    "ubuntu-shipped": UBUNTU_SHIPPED,
    "ubuntu-with-user": UBUNTU_WITH_USER,
    "network-fix": NETWORK_FIX,
    "crlf": CRLF_FILE,
    "documented-example": DOCUMENTED_EXAMPLE,
    "docker-with-comment": DOCKER_WITH_COMMENT,
    "systemd-off": SYSTEMD_OFF,
    "capitalised": CAPITALISED,
    "empty": "",
}

# `schtasks /Query /TN name /FO LIST /V`, English Windows: a task waiting for its trigger,
# and one running now (shown in the format of the real outputs quoted in public write-ups).
SCHTASKS_LIST_READY = """
Folder: \\
HostName:                             DESKTOP-7Q2K4LM
TaskName:                             \\tailscale-wsl2
Next Run Time:                        N/A
Status:                               Ready
Logon Mode:                           Interactive only
Last Run Time:                        11/30/1999 12:00:00 AM
Last Result:                          267011
Author:                               tailscale-wsl2 install
Task To Run:                          C:\\Users\\alice\\bin\\tailscale-wsl2.exe up
Start In:                             N/A
Comment:                              Written by tailscale-wsl2 install
Scheduled Task State:                 Enabled
Idle Time:                            Disabled
Power Management:
Run As User:                          alice
Schedule Type:                        At logon time
"""

SCHTASKS_LIST_RUNNING = SCHTASKS_LIST_READY.replace(
    "Status:                               Ready", "Status:                               Running"
).replace(
    "Last Result:                          267011", "Last Result:                          267009"
)

# The same query on a German Windows: labels and status are translated.
SCHTASKS_LIST_GERMAN = """
Ordner: \\
Hostname:                             DESKTOP-7Q2K4LM
Aufgabenname:                         \\tailscale-wsl2
Nächste Laufzeit:                     Nicht zutreffend
Status:                               Wird ausgeführt
Anmeldemodus:                         Nur interaktiv
Letzte Laufzeit:                      05.03.2025 08:12:44
Letztes Ergebnis:                     267009
"""

# `schtasks /Query /XML` of a logon task made by hand in the Task Scheduler window: Windows
# leaves settings at their defaults out, and writes the user's SID.
EXPORTED_BY_HAND = """<?xml version="1.0" encoding="UTF-16"?>
<Task version="1.2" xmlns="http://schemas.microsoft.com/windows/2004/02/mit/task">
  <RegistrationInfo>
    <Date>2025-03-05T08:10:31.5581904</Date>
    <Author>DESKTOP-7Q2K4LM\\alice</Author>
    <URI>\\tailscale-wsl2</URI>
  </RegistrationInfo>
  <Principals>
    <Principal id="Author">
      <UserId>S-1-5-21-3623811015-3361044348-30300820-1001</UserId>
      <LogonType>InteractiveToken</LogonType>
    </Principal>
  </Principals>
  <Settings>
    <MultipleInstancesPolicy>IgnoreNew</MultipleInstancesPolicy>
    <IdleSettings>
      <StopOnIdleEnd>true</StopOnIdleEnd>
      <RestartOnIdle>false</RestartOnIdle>
    </IdleSettings>
  </Settings>
  <Triggers>
    <LogonTrigger>
      <Enabled>true</Enabled>
      <UserId>DESKTOP-7Q2K4LM\\alice</UserId>
    </LogonTrigger>
  </Triggers>
  <Actions Context="Author">
    <Exec>
      <Command>"C:\\Users\\alice\\bin\\tailscale-wsl2.exe"</Command>
      <Arguments>up</Arguments>
    </Exec>
  </Actions>
</Task>
"""
