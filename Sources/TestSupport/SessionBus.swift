import Foundation

/// A real D-Bus session bus for one test, with a desktop notification server on it that records
/// every `Notify` call.
///
/// The bus is the system's own `dbus-daemon --session`, listening on `unix:path=<dir>/runtime/bus`:
/// exactly where systemd's dbus-user-session puts a user's bus, so a test can give flippio only
/// `XDG_RUNTIME_DIR` and check that it finds the bus there. The notification server is a few lines
/// of Python on GLib's GDBus (`python3-gi`): it owns `org.freedesktop.Notifications`, answers
/// `Notify` with an id (the replaced one when `replaces_id` is set, as the specification says), and
/// appends each call to a JSON-lines file *before* replying, so once the caller's `Notify` returned
/// the record is there: tests never wait and hope.
///
/// For example:
///
/// ```swift
/// let bus = try SessionBus()
/// defer { bus.terminate() }
/// // … send notifications to bus.address …
/// #expect(try bus.notifications().count == 1)
/// ```
public final class SessionBus: @unchecked Sendable {
    /// One recorded `Notify` call.
    public struct Notification: Decodable, Equatable, Sendable {
        public var appName: String
        public var replacesID: UInt32
        public var icon: String
        public var summary: String
        public var body: String
        public var urgency: Int?
        /// The id the server answered with.
        public var id: UInt32
    }

    /// Why a bus cannot be started here, or nil when it can.
    public static var unavailableReason: String? {
        if !FileManager.default.isExecutableFile(atPath: "/usr/bin/dbus-daemon") { return "dbus-daemon is not installed (apt-get install dbus-daemon)" }
        if Products.systemTool("gdbus") == nil { return "gdbus is not installed (apt-get install libglib2.0-bin)" }
        let probe = try? Shell.run(URL(fileURLWithPath: "/usr/bin/python3"), ["-c", "import gi; gi.require_version('Gio', '2.0')"], timeout: 30)
        if probe?.status != 0 { return "python3-gi is not installed (apt-get install python3-gi gir1.2-glib-2.0)" }
        return nil
    }

    public let dir: TemporaryDirectory
    /// The `XDG_RUNTIME_DIR` whose `bus` is this bus's socket.
    public let runtime: URL
    /// The bus address, `unix:path=…/bus`.
    public let address: String
    private var pids: [Int32] = []
    private var log: URL { dir.child("notifications.jsonl") }

    /// Starts the bus and, unless `server` is false, the notification server; returns when the server
    /// owns its name.
    public init(server: Bool = true) throws {
        dir = try TemporaryDirectory("flippio-bus")
        runtime = dir.child("runtime")
        try FileManager.default.createDirectory(at: runtime, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o700])
        address = "unix:path=\(runtime.appendingPathComponent("bus").path)"
        // The daemon runs detached from this process: started by a shell that closes every descriptor
        // above 2 first and points 0-2 at files, so no pipe of the test's Process stays open in it
        // (Foundation's Process waits for EOF on those; see RealUserManager.start).
        let pidFile = dir.child("bus.pid")
        try Self.detached("/usr/bin/dbus-daemon --session --fork --nosyslog --address='\(address)' --print-pid=1 >'\(pidFile.path)'",
                          log: dir.child("bus.log"))
        guard let text = try? String(contentsOf: pidFile, encoding: .utf8),
              let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw ShellError("dbus-daemon did not start: \((try? String(contentsOf: dir.child("bus.log"), encoding: .utf8)) ?? "")")
        }
        pids.append(pid)
        if server { try startServer() }
    }

    /// Runs `command` through bash with descriptors 3 and up closed, stdin from /dev/null and stderr
    /// to `log`; returns bash's stdout (what `command` echoes, when it does not redirect it).
    @discardableResult
    static func detached(_ command: String, log: URL, environment: [String: String] = [:]) throws -> String {
        let script = #"for fd in /proc/$$/fd/*; do n=${fd##*/}; if [ "$n" -gt 2 ]; then eval "exec $n>&-" 2>/dev/null; fi; done; "#
            + command + " </dev/null 2>>'\(log.path)'"
        let result = try Shell.run(URL(fileURLWithPath: "/bin/bash"), ["-c", script], environment: environment, timeout: 30)
        guard result.status == 0 else { throw ShellError("\(command) failed (\(result.status)): \(result.err)") }
        return result.out
    }

    private func startServer() throws {
        let script = dir.child("notification-server.py")
        try Self.serverScript.write(to: script, atomically: true, encoding: .utf8)
        let ready = dir.child("server.ready")
        let output = try Self.detached(
            "{ /usr/bin/python3 '\(script.path)' '\(log.path)' '\(ready.path)' >'\(dir.child("server.log").path)' 2>&1 </dev/null & } ; echo $!",
            log: dir.child("server.log"), environment: ["DBUS_SESSION_BUS_ADDRESS": address])
        guard let pid = Int32(output.trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw ShellError("the notification server did not start: \(output)")
        }
        pids.append(pid)
        let deadline = Date().addingTimeInterval(30)
        while !FileManager.default.fileExists(atPath: ready.path) {
            guard Date() < deadline, kill(pid, 0) == 0 else {
                throw ShellError("the notification server did not take its name: \((try? String(contentsOf: dir.child("server.log"), encoding: .utf8)) ?? "")")
            }
            usleep(20_000)
        }
    }

    /// Every `Notify` call so far, in order.
    public func notifications() throws -> [Notification] {
        guard let data = FileManager.default.contents(atPath: log.path) else { return [] }
        return try data.split(separator: UInt8(ascii: "\n")).map { try JSONDecoder().decode(Notification.self, from: Data($0)) }
    }

    /// Ends the server and the bus (SIGKILL: neither holds anything worth a graceful stop); safe to
    /// call more than once.
    public func terminate() {
        for pid in pids.reversed() where pid > 0 { kill(pid, SIGKILL) }
        pids = []
    }

    deinit { terminate() }

    static let serverScript = #"""
    import json, sys
    import gi
    gi.require_version('Gio', '2.0')
    from gi.repository import Gio, GLib

    XML = '''<node><interface name="org.freedesktop.Notifications">
      <method name="Notify">
        <arg type="s" direction="in"/><arg type="u" direction="in"/><arg type="s" direction="in"/>
        <arg type="s" direction="in"/><arg type="s" direction="in"/><arg type="as" direction="in"/>
        <arg type="a{sv}" direction="in"/><arg type="i" direction="in"/><arg type="u" direction="out"/>
      </method>
      <method name="GetCapabilities"><arg type="as" direction="out"/></method>
      <method name="GetServerInformation">
        <arg type="s" direction="out"/><arg type="s" direction="out"/><arg type="s" direction="out"/><arg type="s" direction="out"/>
      </method>
    </interface></node>'''
    log_path, ready_path = sys.argv[1], sys.argv[2]
    interface = Gio.DBusNodeInfo.new_for_xml(XML).interfaces[0]
    last_id = [0]

    def call(connection, sender, path, interface_name, method, parameters, invocation):
        if method == 'Notify':
            app, replaces, icon, summary, body, actions, hints, timeout = parameters.unpack()
            if replaces:
                nid = replaces
            else:
                last_id[0] += 1
                nid = last_id[0]
            record = {'appName': app, 'replacesID': replaces, 'icon': icon, 'summary': summary, 'body': body,
                      'urgency': hints.get('urgency'), 'id': nid}
            with open(log_path, 'a') as f:
                f.write(json.dumps(record) + '\n')
            invocation.return_value(GLib.Variant('(u)', (nid,)))
        elif method == 'GetCapabilities':
            invocation.return_value(GLib.Variant('(as)', (['body'],)))
        else:
            invocation.return_value(GLib.Variant('(ssss)', ('flippio-test', 'flippio', '1', '1.2')))

    def bus_acquired(connection, name):
        connection.register_object('/org/freedesktop/Notifications', interface, call, None, None)

    def name_acquired(connection, name):
        with open(ready_path, 'w') as f:
            f.write('ok')

    def name_lost(connection, name):
        sys.exit(1)

    Gio.bus_own_name(Gio.BusType.SESSION, 'org.freedesktop.Notifications', Gio.BusNameOwnerFlags.NONE,
                     bus_acquired, name_acquired, name_lost)
    GLib.MainLoop().run()
    """#
}
