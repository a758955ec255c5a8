/// The one place flippio's version is written.
///
/// `flippio --version` prints it, the installed man page carries it, and `make install` builds the
/// binary that reports it. Keeping it in the engine (not in the CLI target) lets the agent log it at
/// start-up and lets tests compare an installed binary against the source it was built from.
///
/// For example:
///
/// ```swift
/// logger.info("flippio \(FlippioVersion.current) starting")
/// ```
public enum FlippioVersion {
    /// The release this source tree builds, `MAJOR.MINOR.PATCH`.
    public static let current = "0.15.0"
}
