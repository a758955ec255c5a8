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
# Stop every process of the unit, so no adb child outlives the agent.
KillMode=control-group

# Hardening that works in user units (no user namespaces needed). Not ProtectHome=: adb keeps its
# key in ~/.android and the workspace is usually under ~. Not PrivateTmp=, ProtectSystem=,
# PrivateUsers=: a user manager can only apply them with user namespaces.
# NoNewPrivileges= stays off: ifuse (the iOS file backend where afcclient is missing) mounts and
# unmounts through the setuid fusermount, whose setuid bit no_new_privs makes the kernel ignore.
NoNewPrivileges=no
SystemCallArchitectures=native
LockPersonality=yes
RestrictRealtime=yes
# Local sockets (adb server, usbmuxd, sd_notify), loopback TCP to the adb server, netlink for USB events.
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
UMask=0077

[Install]
WantedBy=default.target

"""#
}
