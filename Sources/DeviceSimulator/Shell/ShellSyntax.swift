/// The part of mksh (`/system/bin/sh`) that adb users type: words with quotes and escapes,
/// `$VAR`/`$?`, `;` `&&` `||` `|`, `&` (a list run in the background, `wait` for it),
/// redirections, unquoted globs, `#` comments.
///
/// Parsing is separate from running: variables and globs are expanded when a command runs.
enum ShellSyntax {
    /// A piece of a word: literal text, or a variable to expand; `quoted` text is not globbed.
    enum Part: Equatable {
        case text(String, quoted: Bool)
        case variable(String, quoted: Bool)
    }

    struct Word: Equatable {
        var parts: [Part] = []
    }

    struct Redirection: Equatable {
        enum Kind: Equatable { case read, write, append, duplicate(Int) }
        var fd: Int
        var kind: Kind
        var target: Word?
    }

    struct Command: Equatable {
        var words: [Word] = []
        var redirections: [Redirection] = []
        var isEmpty: Bool { words.isEmpty && redirections.isEmpty }
    }

    enum Connector: Equatable { case sequence, and, or }

    /// A pipeline (`a | b`) and how it joins the previous one.
    struct Step: Equatable {
        var connector: Connector
        var pipeline: [Command]
        /// Part of an and-or list ended by `&`: the whole list runs in the background.
        var background = false
    }

    struct SyntaxError: Error, Equatable { let message: String }

    // MARK: - Lexing

    private enum Token: Equatable {
        case word(Word)
        case op(String)        // ; && || | &
        case redirect(Redirection.Kind, fd: Int)
    }

    private static func lex(_ input: String) throws -> [Token] {
        var tokens: [Token] = []
        let chars = Array(input)
        var i = 0
        var word = Word()
        var inWord = false
        var literal = ""          // pending unquoted text

        func flushLiteral() {
            if !literal.isEmpty { word.parts.append(.text(literal, quoted: false)); literal = "" }
        }
        func endWord() {
            flushLiteral()
            if inWord { tokens.append(.word(word)) }
            word = Word()
            inWord = false
        }
        func readVariable(at index: inout Int, quoted: Bool) -> Part? {
            // chars[index] == "$"
            let next = index + 1
            guard next < chars.count else { return nil }
            let c = chars[next]
            if "?$#!0123456789".contains(c) {
                index = next + 1
                return .variable(String(c), quoted: quoted)
            }
            if c == "{" {
                var j = next + 1
                var name = ""
                while j < chars.count && chars[j] != "}" { name.append(chars[j]); j += 1 }
                guard j < chars.count else { return nil }
                index = j + 1
                return .variable(name, quoted: quoted)
            }
            if c == "_" || c.isLetter {
                var j = next
                var name = ""
                while j < chars.count && (chars[j] == "_" || chars[j].isLetter || chars[j].isNumber) {
                    name.append(chars[j]); j += 1
                }
                index = j
                return .variable(name, quoted: quoted)
            }
            return nil
        }

        while i < chars.count {
            let c = chars[i]
            switch c {
            case " ", "\t":
                endWord(); i += 1
            case "\n":
                endWord(); tokens.append(.op("\n")); i += 1
            case "#" where !inWord:
                while i < chars.count && chars[i] != "\n" { i += 1 }
            case "'":
                inWord = true; flushLiteral()
                var j = i + 1
                var text = ""
                while j < chars.count && chars[j] != "'" { text.append(chars[j]); j += 1 }
                guard j < chars.count else { throw SyntaxError(message: "syntax error: unterminated quoted string") }
                word.parts.append(.text(text, quoted: true))
                i = j + 1
            case "\"":
                inWord = true; flushLiteral()
                var j = i + 1
                var text = ""
                var closed = false
                while j < chars.count {
                    let d = chars[j]
                    if d == "\"" { closed = true; j += 1; break }
                    if d == "\\" && j + 1 < chars.count && "$`\"\\\n".contains(chars[j + 1]) {
                        if chars[j + 1] != "\n" { text.append(chars[j + 1]) }
                        j += 2; continue
                    }
                    if d == "$", let part = readVariable(at: &j, quoted: true) {
                        if !text.isEmpty { word.parts.append(.text(text, quoted: true)); text = "" }
                        word.parts.append(part)
                        continue
                    }
                    text.append(d); j += 1
                }
                guard closed else { throw SyntaxError(message: "syntax error: unterminated quoted string") }
                word.parts.append(.text(text, quoted: true))
                i = j
            case "\\":
                if i + 1 < chars.count {
                    if chars[i + 1] == "\n" { i += 2; continue }
                    inWord = true; flushLiteral()
                    word.parts.append(.text(String(chars[i + 1]), quoted: true))
                    i += 2
                } else {
                    i += 1
                }
            case "$":
                var j = i
                if let part = readVariable(at: &j, quoted: false) {
                    inWord = true; flushLiteral()
                    word.parts.append(part)
                    i = j
                } else {
                    inWord = true; literal.append(c); i += 1
                }
            case "(", ")":
                // mksh would start or end a subshell here; this device has none, and an unquoted
                // paren in an argument (`find . ( -name x )`) is a syntax error on a phone too.
                throw SyntaxError(message: "syntax error: '\(c)' unexpected")
            case ";":
                endWord(); tokens.append(.op(";")); i += 1
            case "&":
                endWord()
                if i + 1 < chars.count && chars[i + 1] == "&" { tokens.append(.op("&&")); i += 2 }
                else { tokens.append(.op("&")); i += 1 }
            case "|":
                endWord()
                if i + 1 < chars.count && chars[i + 1] == "|" { tokens.append(.op("||")); i += 2 }
                else { tokens.append(.op("|")); i += 1 }
            case ">", "<":
                // A word made only of unquoted digits right before the operator is the fd number.
                var fd = c == ">" ? 1 : 0
                if inWord, word.parts.isEmpty, !literal.isEmpty, literal.allSatisfy(\.isNumber), let n = Int(literal) {
                    fd = n
                    literal = ""
                    inWord = false
                }
                endWord()
                var j = i + 1
                let kind: Redirection.Kind
                if c == "<" {
                    kind = .read
                } else if j < chars.count && chars[j] == ">" {
                    kind = .append; j += 1
                } else if j < chars.count && chars[j] == "&" {
                    var digits = ""
                    var k = j + 1
                    while k < chars.count && chars[k].isNumber { digits.append(chars[k]); k += 1 }
                    if let target = Int(digits) {
                        kind = .duplicate(target); j = k
                    } else {
                        kind = .write; j += 1    // `>&file`: treat as `>file`
                    }
                } else {
                    kind = .write
                }
                tokens.append(.redirect(kind, fd: fd))
                i = j
            default:
                inWord = true; literal.append(c); i += 1
            }
        }
        endWord()
        return tokens
    }

    // MARK: - Parsing

    /// Parses a command line into steps (pipelines joined by `;`, `&&`, `||`).
    static func parse(_ input: String) throws -> [Step] {
        let tokens = try lex(input)
        var steps: [Step] = []
        var connector = Connector.sequence
        var pipeline: [Command] = []
        var command = Command()
        var i = 0

        func unexpected(_ op: String) -> SyntaxError {
            SyntaxError(message: "syntax error: '\(op)' unexpected")
        }

        while i < tokens.count {
            switch tokens[i] {
            case .word(let w):
                command.words.append(w)
                i += 1
            case .redirect(let kind, let fd):
                if case .duplicate = kind {
                    command.redirections.append(Redirection(fd: fd, kind: kind, target: nil))
                    i += 1
                } else {
                    guard i + 1 < tokens.count, case .word(let target) = tokens[i + 1] else {
                        throw SyntaxError(message: "syntax error: newline unexpected")
                    }
                    command.redirections.append(Redirection(fd: fd, kind: kind, target: target))
                    i += 2
                }
            case .op(let op):
                if op == "|" {
                    guard !command.isEmpty else { throw unexpected(op) }
                    pipeline.append(command)
                    command = Command()
                } else {
                    if command.isEmpty {
                        // A line end after nothing is fine, and `;` at the end or between empty
                        // lines; `&&`/`||`/`&` are not, nor `;` right after `&` (`a &; b` is a
                        // syntax error in mksh, as in every sh).
                        guard pipeline.isEmpty else { throw unexpected(op) }
                        if op == ";", i > 0, tokens[i - 1] == .op("&") { throw unexpected(op) }
                        if op != ";" && op != "\n" { throw unexpected(op) }
                    } else {
                        pipeline.append(command)
                        command = Command()
                        steps.append(Step(connector: connector, pipeline: pipeline))
                        pipeline = []
                    }
                    if op == "&" {
                        // The and-or list that just ended (back to its first step) goes to the background.
                        var index = steps.count - 1
                        while index >= 0 {
                            steps[index].background = true
                            if steps[index].connector == .sequence { break }
                            index -= 1
                        }
                    }
                    connector = op == "&&" ? .and : op == "||" ? .or : .sequence
                }
                i += 1
            }
        }
        if !command.isEmpty {
            pipeline.append(command)
        } else if !pipeline.isEmpty || connector != .sequence {
            throw SyntaxError(message: "syntax error: unexpected end of input")
        }
        if !pipeline.isEmpty { steps.append(Step(connector: connector, pipeline: pipeline)) }
        return steps
    }
}
