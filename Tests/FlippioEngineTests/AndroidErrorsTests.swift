import Foundation
import Testing
@testable import FlippioEngine

@Suite("Android error mapping")
struct AndroidErrorsTests {
    static let subject = AndroidErrors.Subject(serial: "emulator-5554", package: "com.example.notes", path: "/data/data/com.example.notes/databases/notes.db")

    /// Real texts of adb 29, run-as and toybox, and the code each must map to.
    static let cases: [(String, FlippioError.Code)] = [
        ("error: device unauthorized.\nThis adb server's $ADB_VENDOR_KEYS is not set\nTry 'adb kill-server' if that seems wrong.\nOtherwise check for a confirmation dialog on your device.\n", .deviceUnauthorized),
        ("error: device offline\n", .deviceOffline),
        ("adb: error: failed to get feature set: device offline\n", .deviceOffline),
        ("error: device still authorizing\n", .deviceConnecting),
        ("error: device still connecting\n", .deviceConnecting),
        ("error: device 'emulator-5554' not found\n", .deviceNotFound),
        ("error: no devices/emulators found\n", .deviceNotFound),
        ("error: more than one device/emulator\n", .deviceAmbiguous),
        ("run-as: package not debuggable: com.example.notes\n", .appNotDebuggable),
        ("run-as: unknown package: com.example.notes\n", .unknownPackage),
        ("cat: /data/data/com.example.notes/databases/notes.db: No such file or directory\n", .noSuchFile),
        ("cat: /data/data/com.example.notes/databases/notes.db: Permission denied\n", .permissionDenied),
        ("error: protocol fault (couldn't read status): Success\n", .protocolFault),
        ("error: protocol fault (couldn't read status): Connection reset by peer\n", .connectionReset),
        ("adb: error: failed to read copy response\n", .connectionReset),
        ("error: closed\n", .connectionReset),
        ("adb: error: failed to copy '/tmp/s.db' to '/data/local/tmp/flippio-0123456789abcdef.db': couldn't read from device\n", .connectionReset),
        ("adb: error: failed to copy '/tmp/s.db' to '/data/local/tmp/x.db': remote couldn't create file: Permission denied\n", .permissionDenied),
        ("* daemon not running; starting now at tcp:5037\nADB server didn't ACK\nFull server startup log: /tmp/adb.1000.log\n* failed to start daemon\nerror: cannot connect to daemon\n", .adbServerUnavailable),
        ("error: cannot connect to daemon at tcp:5037: Connection refused\n", .adbServerUnavailable),
    ]

    @Test func eachRealText_mapsToItsCode() {
        for (text, code) in Self.cases {
            let error = AndroidErrors.recognise(text, Self.subject)
            #expect(error?.code == code, "\(text)")
            #expect(error?.message.isEmpty == false)
            #expect(error?.context["serial"] == "emulator-5554")
        }
    }

    @Test func messagesNameTheSubject() throws {
        let notDebuggable = try #require(AndroidErrors.recognise("run-as: package not debuggable: com.example.notes", Self.subject))
        #expect(notDebuggable.message.contains("com.example.notes"))
        #expect(notDebuggable.message.contains("emulator-5554"))
        #expect(notDebuggable.remedy == "Install a debuggable build (android:debuggable=true / a debug variant), or use an emulator image with root.")
        let missing = try #require(AndroidErrors.recognise("No such file or directory", Self.subject))
        #expect(missing.message.contains("notes.db"))
        let server = try #require(AndroidErrors.recognise("error: cannot connect to daemon", Self.subject))
        #expect(server.remedy?.contains("adb start-server") == true)
        #expect(server.isRetryable)
        #expect(!notDebuggable.isRetryable)
    }

    @Test func unknownText_isToolFailedWithExcerpt() {
        let command = ProcessCommand(executable: "/usr/bin/adb", arguments: ["-s", "emulator-5554", "shell", "frobnicate"], timeout: .seconds(20))
        let result = ProcessResult(termination: .exited(127), stdout: Data(),
                                   stderr: Data("/system/bin/sh: frobnicate: inaccessible or not found\n".utf8),
                                   duration: .milliseconds(5), timedOut: false)
        let error = AndroidErrors.failure(result, command, Self.subject)
        #expect(error.code == .toolFailed)
        #expect(error.message.contains("frobnicate: inaccessible or not found"))
        #expect(error.message.contains("127"))
    }

    @Test func timedOutResult_namesCommandAndTimeout() {
        let command = ProcessCommand(executable: "/usr/bin/adb", arguments: ["-s", "emulator-5554", "shell", "sleep 100"], timeout: .seconds(3))
        let result = ProcessResult(termination: .signalled(9), stdout: Data(), stderr: Data(), duration: .seconds(3), timedOut: true)
        let error = AndroidErrors.failure(result, command, Self.subject)
        #expect(error.code == .timedOut)
        #expect(error.message.contains("adb -s emulator-5554 shell sleep 100"))
        #expect(error.message.contains("3 s"))
        #expect(error.message.contains("emulator-5554"))
    }
}
