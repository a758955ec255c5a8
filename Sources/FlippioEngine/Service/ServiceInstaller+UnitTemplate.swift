// The unit template, kept byte for byte equal to systemd/flippio-agent.service
// (UnitFileTests checks that). Edit both together.

extension ServiceInstaller {
    /// The text of `systemd/flippio-agent.service`, with `@FLIPPIO@` and `@WORKSPACE@` placeholders.
    public static let unitTemplate: String = #"""
# flippio agent as a systemd user service.
#
# `flippio service install` writes this file to ~/.config/systemd/user/ with @FLIPPIO@ (the flippio
# executable) and @WORKSPACE@ (the workspace folder) filled in, and an Environment= line for each adb
# variable (ANDROID_ADB_SERVER_PORT, ADB_SERVER_SOCKET, ANDROID_SERIAL, ANDROID_HOME, ...) and FLIPPIO_*
# setting of the installing shell, since a user unit does not inherit it; then enables and starts it.
# To keep the agent running after you log out: loginctl enable-linger $USER

[Unit]
Description=flippio agent: keeps app SQLite databases on devices in sync with a local workspace
# `make install` puts the man page under $PREFIX/share/man; `systemctl --user help flippio-agent` opens it.
Documentation=man:flippio(1)
# Give up after 5 failed starts within a minute instead of restarting forever.
StartLimitIntervalSec=60
StartLimitBurst=5

[Service]
# The agent sends READY=1 once the workspace is loaded and watched, STATUS= as it works,
# WATCHDOG=1 every WatchdogSec/2 and STOPPING=1 on SIGTERM. Only the agent itself may notify.
Type=notify
NotifyAccess=main
ExecStart=@FLIPPIO@ agent --workspace @WORKSPACE@
Restart=on-failure
RestartSec=2
WatchdogSec=30
# SIGTERM lets in-flight pushes finish; after 20 s systemd sends SIGKILL.
TimeoutStopSec=20
# Signal only the agent itself, never the rest of its cgroup. If no adb server is running, the
# agent's first `adb` call starts one (`adb fork-server server`, in its own session but in this unit's
# cgroup), and that server is the user's: Android Studio and every terminal share it. With
# KillMode=control-group (and with mixed, whose final SIGKILL goes to every process left in the cgroup)
# each stop or restart of the agent would kill it and drop every adb connection. The agent's own adb
# children need no help from systemd: each runs in its own process group, which the agent kills when a
# call times out or is cancelled, and a graceful stop cancels them all before the agent exits.
KillMode=process

# Hardening that works in user units: each of these is applied with seccomp or prctl, which need no
# user namespaces. Not ProtectHome=: adb keeps its key in ~/.android and the workspace is usually
# under ~. Not PrivateTmp=, ProtectSystem=, PrivateUsers=, ProtectKernel*=, ProtectHostname=: a user
# manager can only apply them with user namespaces.
#
# NoNewPrivileges= is implied by every seccomp setting below when the manager has no CAP_SYS_ADMIN
# (every user manager but root's): a setuid program started by the agent runs without its privileges.
# That includes fusermount (the iOS ifuse path); mount it from outside the unit (e.g. through
# `systemd-run --user`) or use afcclient, which needs no mount. RestrictSUIDSGID= only forbids creating
# setuid/setgid files; it does not stop running them.
NoNewPrivileges=yes
SystemCallArchitectures=native
# The system calls a service normally needs (systemd.exec(5)); anything else fails with EPERM instead of
# killing the agent with SIGSYS, so a missing call shows up as an error message, not a crash.
SystemCallFilter=@system-service
SystemCallErrorNumber=EPERM
# Neither the agent nor adb, sqlite, the libimobiledevice tools or fusermount create namespaces, map
# memory writable and executable at once (no JIT), change the execution domain or need realtime scheduling.
RestrictNamespaces=yes
MemoryDenyWriteExecute=yes
LockPersonality=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
# Local sockets (adb server, usbmuxd, sd_notify, the session bus for notifications), loopback TCP to
# the adb server, netlink for USB events.
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
UMask=0077

[Install]
WantedBy=default.target

"""#
}
