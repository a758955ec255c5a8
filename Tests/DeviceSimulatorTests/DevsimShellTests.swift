import Foundation
import Testing
import TestSupport

/// The device shell through the real client, with the in-process server.
@Suite struct DevsimShellTests {
    static let app = "com.example.notes"

    let sim: Devsim
    let device: DevsimDevice

    init() throws {
        sim = try Devsim(inProcess: true)
        device = try sim.addDevice("emulator-5554", su: true, packages: [Self.app: true, "com.example.release": false])
        try device.setPackage("com.android.chrome", debuggable: false, system: true)
        let dbs = "/data/data/\(Self.app)/databases"
        try device.write(Data("main".utf8), to: "\(dbs)/notes.db")
        try device.write(Data("wal".utf8), to: "\(dbs)/notes.db-wal")
        try device.write(Data("cache".utf8), to: "\(dbs)/cache.sqlite")
        try device.write(Data("prefs".utf8), to: "/data/data/\(Self.app)/shared_prefs/p.xml")
        try device.write(Data("ext".utf8), to: "/sdcard/Android/data/\(Self.app)/files/ext.db")
    }

    func shell(_ command: String) throws -> ShellResult {
        try sim.adb(["-s", device.serial, "shell", command])
    }

    // MARK: - Packages

    @Test func pm_listsPackages_thirdPartyOnlyWithDash3() throws {
        #expect(try shell("pm list packages -3").out == "package:com.example.notes\npackage:com.example.release\n")
        #expect(try shell("pm list packages").out == "package:com.android.chrome\npackage:com.example.notes\npackage:com.example.release\n")
        let path = try shell("pm path com.example.notes")
        #expect(path.status == 0)
        #expect(path.out.hasPrefix("package:/data/app/~~") && path.out.hasSuffix("/base.apk\n"))
        let unknown = try shell("pm path com.example.nope")
        #expect(unknown.status == 1)
        #expect(unknown.out == "")
        #expect(try shell("am force-stop com.example.nope").status == 0)
    }

    // MARK: - find

    @Test func find_withTheBridgesPatterns_listsDatabases() throws {
        let patterns = "'(' -name '*.db' -o -name '*.sqlite' -o -name '*.sqlite3' -o -name '*.db3' -o -name '*.sqlitedb' ')'"
        let result = try shell("run-as \(Self.app) find /data/data/\(Self.app) -type f \(patterns)")
        #expect(result.status == 0)
        #expect(result.out == "/data/data/\(Self.app)/databases/cache.sqlite\n/data/data/\(Self.app)/databases/notes.db\n")

        let rooted = try shell("su 0 find /data/data/\(Self.app) -type f \(patterns)")
        #expect(rooted.out == result.out)

        let shared = try shell("find /sdcard/Android/data/\(Self.app) -type f \(patterns) 2>/dev/null")
        #expect(shared.out == "/sdcard/Android/data/\(Self.app)/files/ext.db\n")

        let missing = try shell("find /sdcard/Android/data/com.example.nope -type f")
        #expect(missing.status == 1)
        #expect(missing.err == "find: /sdcard/Android/data/com.example.nope: No such file or directory\n")

        let relative = try shell("run-as \(Self.app) find . -maxdepth 1 -type d")
        #expect(relative.out == ".\n./databases\n./shared_prefs\n")
    }

    // MARK: - Files

    @Test func statAndHashes_reportFiles() throws {
        let stat = try shell("run-as \(Self.app) stat -c '%s %n' databases/notes.db databases/notes.db-wal")
        #expect(stat.out == "4 databases/notes.db\n3 databases/notes.db-wal\n")
        let type = try shell("run-as \(Self.app) stat -c %F databases")
        #expect(type.out == "directory\n")
        let md5 = try shell("run-as \(Self.app) md5sum databases/notes.db")
        #expect(md5.out == "fad58de7366495db4650cfefac2fcd61  databases/notes.db\n")
    }

    @Test func redirectionsGlobsAndOperators_behaveLikeMksh() throws {
        #expect(try shell("echo one > /sdcard/a.txt; echo two >> /sdcard/a.txt; cat < /sdcard/a.txt").out == "one\ntwo\n")
        #expect(try shell("cat /nope 2>&1").out == "cat: /nope: No such file or directory\n")
        #expect(try shell("cat /nope 2>/dev/null || echo fallback").out == "fallback\n")
        #expect(try shell("false && echo no; echo $?").out == "1\n")
        // The outer shell (the shell user) cannot read the app's folder: the glob reaches run-as unexpanded.
        #expect(try shell("run-as \(Self.app) ls databases/*.db*").err == "ls: databases/*.db*: No such file or directory\n")
        #expect(try shell("run-as \(Self.app) sh -c 'ls databases/*.db*'").out == "databases/notes.db\ndatabases/notes.db-wal\n")
        #expect(try shell("echo 'a  b' \"c\\\"d\" e\\ f").out == "a  b c\"d e f\n")
        #expect(try shell("echo /sdcard/*.none").out == "/sdcard/*.none\n")
        #expect(try shell("mkdir -p /sdcard/x/y && test -d /sdcard/x/y && echo made").out == "made\n")
        #expect(try shell("mkdir /sdcard/x").err == "mkdir: '/sdcard/x': File exists\n")
        #expect(try shell("touch /sdcard/e && test -s /sdcard/e || echo empty").out == "empty\n")
        #expect(try shell("[ -f /sdcard/a.txt ] && echo file").out == "file\n")
    }

    @Test func rmAndMv_followToybox() throws {
        #expect(try shell("rm -f /sdcard/none").status == 0)
        let rm = try shell("rm /sdcard/none")
        #expect(rm.status == 1)
        #expect(rm.err == "rm: /sdcard/none: No such file or directory\n")
        #expect(try shell("rm /sdcard/Android").err == "rm: /sdcard/Android: Is a directory\n")
        #expect(try shell("rm -r /sdcard/Android && test -e /sdcard/Android || echo gone").out == "gone\n")
        #expect(try shell("echo x > /sdcard/m1 && mv -f /sdcard/m1 /sdcard/m2 && cat /sdcard/m2").out == "x\n")
        #expect(try shell("mv /sdcard/m1 /sdcard/m3").err == "mv: bad '/sdcard/m1': No such file or directory\n")
        #expect(try shell("cp /sdcard/none /sdcard/m3").err == "cp: bad '/sdcard/none': No such file or directory\n")
    }

    // MARK: - Permissions

    @Test func permissions_areAPhones() throws {
        #expect(try shell("ls /data/data/\(Self.app)").err == "ls: /data/data/\(Self.app): Permission denied\n")
        #expect(try shell("echo x > /data/data/\(Self.app)/evil").err == "/system/bin/sh: can't create /data/data/\(Self.app)/evil: Permission denied\n")
        #expect(try shell("echo x > /system/evil").status == 1)
        #expect(try shell("run-as \(Self.app) cat /data/data/com.example.release/x").err == "cat: /data/data/com.example.release/x: Permission denied\n")
        #expect(try shell("run-as \(Self.app) cp /data/local/tmp/none x").err == "cp: bad '/data/local/tmp/none': No such file or directory\n")
        #expect(try shell("su 0 cat /data/data/\(Self.app)/databases/notes.db").out == "main")
        #expect(try shell("su -c 'id -u; whoami'").out.hasSuffix("root\n"))
        #expect(try shell("run-as \(Self.app) su 0 id").err == "su: uid \(try appUID()) not allowed to su\n")
        let owner = try shell("su 0 stat -c %u:%g /data/data/\(Self.app)/databases/notes.db").out
        #expect(owner == "\(try appUID()):\(try appUID())\n")
        #expect(try shell("su 0 sh -c 'cp /data/local/tmp/../../data/\(Self.app)/databases/notes.db /data/data/\(Self.app)/databases/n2 && chown \(owner.dropLast()) /data/data/\(Self.app)/databases/n2'").status == 0)
        #expect(try shell("chown 0:0 /sdcard").err == "chown: '/sdcard' to '0:0': Operation not permitted\n")
    }

    func appUID() throws -> String {
        let id = try shell("run-as \(Self.app) id").out
        return String(id.dropFirst(4).prefix { $0.isNumber })
    }

    @Test func phoneAliases_resolveInsideTheDevice() throws {
        #expect(try shell("run-as \(Self.app) cat /data/user/0/\(Self.app)/databases/notes.db").out == "main")
        #expect(try shell("cat /data/user/0/\(Self.app)/databases/notes.db").err == "cat: /data/user/0/\(Self.app)/databases/notes.db: Permission denied\n")
        #expect(try shell("find /storage/emulated/0/Android/data/\(Self.app) -name '*.db'").out == "/storage/emulated/0/Android/data/\(Self.app)/files/ext.db\n")
    }

    @Test func paths_neverEscapeTheDeviceFolder() throws {
        // A secret beside the devices folder, and symlinks on the device that point at it.
        let secret = sim.workDirectory.appendingPathComponent("secret.txt")
        try Data("host secret".utf8).write(to: secret)
        try FileManager.default.createSymbolicLink(atPath: device.url("/sdcard/abs").path, withDestinationPath: secret.path)
        try FileManager.default.createSymbolicLink(atPath: device.url("/sdcard/rel").path, withDestinationPath: "../../../../secret.txt")

        #expect(try shell("cat /../../../../secret.txt").err == "cat: /../../../../secret.txt: No such file or directory\n")
        #expect(try shell("cat /sdcard/abs").out == "")
        #expect(try shell("cat /sdcard/rel").err == "cat: /sdcard/rel: No such file or directory\n")
        let work = try TemporaryDirectory()
        let pull = try sim.adb(["-s", device.serial, "pull", "/sdcard/rel", work.child("x").path])
        #expect(pull.status != 0)
        #expect(pull.out == "adb: error: failed to copy '/sdcard/rel' to '\(work.child("x").path)': remote open failed: No such file or directory\n")
    }

    @Test func inProcessServer_answersExecAndSync() throws {
        let exec = try sim.adb(["-s", device.serial, "exec-out", "run-as", Self.app, "cat", "databases/notes.db"])
        #expect(exec.out == "main")
        let work = try TemporaryDirectory()
        let file = work.child("up.txt")
        try Data("uploaded".utf8).write(to: file)
        #expect(try sim.adb(["-s", device.serial, "push", file.path, "/sdcard/Download/up.txt"]).status == 0)
        #expect(try Data(contentsOf: device.url("/sdcard/Download/up.txt")) == Data("uploaded".utf8))
        let denied = try sim.adb(["-s", device.serial, "push", file.path, "/data/data/\(Self.app)/up.txt"])
        #expect(denied.status == 1)
        // adb 29 prints sync errors on stdout.
        #expect(denied.out.contains("adb: error: failed to copy '\(file.path)' to '/data/data/\(Self.app)/up.txt': remote couldn't create file: Permission denied\n"))
    }
}
