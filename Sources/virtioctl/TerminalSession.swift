import Foundation
import Synchronization

/// Set by SIGINT, SIGTERM and SIGHUP while a terminal session is open, so that the view restores
/// the terminal before it exits instead of leaving it raw.
let terminalInterrupted = Atomic<Bool>(false)

/// The terminal for a live view in plain ANSI/VT100 control sequences (no curses): the alternate
/// screen, no cursor, keys read one at a time without echo; all undone when it ends.
struct TerminalSession: ~Copyable {
    private var saved = termios()
    private var raw = false

    init() {
        if tcgetattr(STDIN_FILENO, &saved) == 0 {
            var t = saved
            // No line buffering or echo; ISIG stays on, so ^C still raises SIGINT.
            t.c_lflag &= ~tcflag_t(ICANON | ECHO)
            withUnsafeMutableBytes(of: &t.c_cc) { cc in
                cc[Int(VMIN)] = 0
                cc[Int(VTIME)] = 0
            }
            raw = tcsetattr(STDIN_FILENO, TCSANOW, &t) == 0
        }
        for s in [SIGINT, SIGTERM, SIGHUP] {
            signal(s) { _ in terminalInterrupted.store(true, ordering: .relaxed) }
        }
        Self.write("\u{1B}[?1049h\u{1B}[?25l")  // alternate screen, hide the cursor
    }

    static func write(_ s: String) {
        var s = s
        s.withUTF8 { b in
            var done = 0
            while done < b.count {
                let n = Foundation.write(STDOUT_FILENO, b.baseAddress! + done, b.count - done)
                if n <= 0 { if errno == EINTR { continue }; return }
                done += n
            }
        }
    }

    /// Rows and columns of the terminal (24x80 when it does not say).
    var size: (rows: Int, columns: Int) {
        var w = winsize()
        guard ioctl(STDOUT_FILENO, UInt(TIOCGWINSZ), &w) == 0, w.ws_row > 0, w.ws_col > 0 else { return (24, 80) }
        return (Int(w.ws_row), Int(w.ws_col))
    }

    /// Draws `lines` over the previous frame: home, each line then erase-to-end, erase below.
    func draw(_ lines: [String]) {
        let (rows, columns) = size
        var frame = "\u{1B}[H"
        for line in lines.prefix(rows) { frame += String(line.prefix(columns)) + "\u{1B}[K\r\n" }
        frame += "\u{1B}[J"
        Self.write(frame)
    }

    /// Waits up to `seconds` for a key; nil on timeout or interruption.
    func key(within seconds: Double) -> UInt8? {
        var p = pollfd(fd: STDIN_FILENO, events: Int16(POLLIN), revents: 0)
        let ms = Int32(max(0, min(seconds, 3600)) * 1000)
        guard poll(&p, 1, ms) > 0, p.revents & Int16(POLLIN) != 0 else { return nil }
        var c: UInt8 = 0
        return read(STDIN_FILENO, &c, 1) == 1 ? c : nil
    }

    /// Back to the normal screen and the terminal's own settings when the session ends.
    deinit {
        Self.write("\u{1B}[?25h\u{1B}[?1049l")
        var saved = saved
        if raw { tcsetattr(STDIN_FILENO, TCSANOW, &saved) }
        for s in [SIGINT, SIGTERM, SIGHUP] { signal(s, SIG_DFL) }
    }
}
