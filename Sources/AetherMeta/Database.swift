#if canImport(Glibc)
import Glibc
#endif
import AetherModel
import CSQLite

/// A value bound to or read from SQLite.
public enum SQLValue: Equatable, Sendable {
    case null
    case int(Int64)
    case real(Double)
    case text(String)
    case blob([UInt8])

    public var int: Int64? { if case .int(let v) = self { v } else { nil } }
    public var text: String? { if case .text(let v) = self { v } else { nil } }
    public var blob: [UInt8]? {
        switch self {
        case .blob(let v): v
        case .text(let s): Array(s.utf8)
        default: nil
        }
    }
    public var real: Double? {
        switch self {
        case .real(let v): v
        case .int(let v): Double(v)
        default: nil
        }
    }
}

/// A SQLite failure: the result code and SQLite's message.
public struct DatabaseError: Error, CustomStringConvertible, Sendable {
    public let code: Int32
    public let message: String
    public var description: String { "metadata database: \(message) (code \(code))" }
    /// The database is locked by another process longer than the busy timeout.
    public var isBusy: Bool { code & 0xff == SQLITE_BUSY || code & 0xff == SQLITE_LOCKED }
    /// The disk is full.
    public var isFull: Bool { code & 0xff == SQLITE_FULL }
    /// The file is not a database or is damaged.
    public var isCorrupt: Bool { code & 0xff == SQLITE_CORRUPT || code & 0xff == SQLITE_NOTADB }
}

/// One SQLite connection: WAL, a busy timeout, cached statements. Safe from several threads: each
/// call, and a transaction with every call its body makes, holds the connection alone (a recursive
/// mutex; SQLite itself is opened without its own).
public final class Database: SQLConnection, @unchecked Sendable {
    private var handle: OpaquePointer?
    private var cache: [String: OpaquePointer] = [:]
    public let path: String
    private let serial = RecursiveLock()

    @inline(__always)
    private func locked<T>(_ body: () throws -> T) rethrows -> T {
        try serial.withLock(body)
    }

    public init(path: String) throws {
        self.path = path
        var db: OpaquePointer?
        // SQLite creates its files 0644 (less the umask) and gives the -wal and -shm files the main
        // file's mode: a database made here has the store's (private to its owner, or its group's).
        let fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, StoreFiles.fileMode)
        if fd >= 0 { StoreFiles.settle(fd: fd); close(fd) }
        let rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nil)
        guard rc == SQLITE_OK, let db else {
            let message = db.map { String(cString: sqlite3_errmsg($0)) } ?? "cannot open \(path)"
            sqlite3_close(db)
            throw DatabaseError(code: rc, message: message)
        }
        handle = db
        sqlite3_extended_result_codes(db, 1)
        sqlite3_busy_timeout(db, 15_000)
        try execute("PRAGMA journal_mode=WAL")
        try execute("PRAGMA synchronous=NORMAL")
        try execute("PRAGMA foreign_keys=ON")
        // Statement journals and sorts stay in memory: SQLite would otherwise spill them to files in
        // $TMPDIR (or /var/tmp, /tmp), and a small or full file system there fails a write to this
        // database with "database or disk is full" however much room the store has.
        try execute("PRAGMA temp_store=MEMORY")
    }

    deinit {
        for (_, stmt) in cache { sqlite3_finalize(stmt) }
        sqlite3_close_v2(handle)
    }

    /// Rows inserted, updated or deleted through this connection since it opened.
    public var rowsChanged: Int64 { locked { sqlite3_total_changes64(handle) } }

    private func error(_ rc: Int32) -> DatabaseError {
        var message = String(cString: sqlite3_errmsg(handle))
        // The system call's own error tells a full disk (ENOSPC) from a short write or an I/O error.
        let errno = sqlite3_system_errno(handle)
        if errno != 0 && [SQLITE_IOERR, SQLITE_FULL, SQLITE_CANTOPEN].contains(rc & 0xff) { message += ": " + String(cString: strerror(errno)) }
        return DatabaseError(code: rc, message: message)
    }

    /// Runs statements without results (may hold several, separated by semicolons).
    public func execute(_ sql: String) throws { try locked { try executeLocked(sql) } }

    private func executeLocked(_ sql: String) throws {
        var message: UnsafeMutablePointer<CChar>?
        let rc = sqlite3_exec(handle, sql, nil, nil, &message)
        if rc != SQLITE_OK {
            let text = message.map { String(cString: $0) } ?? "error"
            sqlite3_free(message)
            throw DatabaseError(code: rc, message: text)
        }
    }

    private func statement(_ sql: String) throws -> OpaquePointer {
        if let s = cache[sql] { return s }
        var stmt: OpaquePointer?
        let rc = sqlite3_prepare_v2(handle, sql, -1, &stmt, nil)
        guard rc == SQLITE_OK, let stmt else { throw error(rc) }
        cache[sql] = stmt
        return stmt
    }

    private func bind(_ stmt: OpaquePointer, _ values: [SQLValue]) throws {
        sqlite3_reset(stmt)
        sqlite3_clear_bindings(stmt)
        for (i, v) in values.enumerated() {
            let idx = Int32(i + 1)
            let rc: Int32
            switch v {
            case .null: rc = sqlite3_bind_null(stmt, idx)
            case .int(let x): rc = sqlite3_bind_int64(stmt, idx, x)
            case .real(let x): rc = sqlite3_bind_double(stmt, idx, x)
            case .text(let s): rc = sqlite3_bind_text(stmt, idx, s, -1, csqlite_transient())
            case .blob(let b):
                rc = b.withUnsafeBytes { sqlite3_bind_blob(stmt, idx, $0.baseAddress ?? UnsafeRawPointer(bitPattern: 1), Int32(b.count), csqlite_transient()) }
            }
            if rc != SQLITE_OK { throw error(rc) }
        }
    }

    /// Runs one statement that returns no rows; returns the number of rows changed.
    @discardableResult
    public func run(_ sql: String, _ values: SQLValue...) throws -> Int {
        try run(sql, values)
    }

    @discardableResult
    public func run(_ sql: String, _ values: [SQLValue]) throws -> Int { try locked { try runLocked(sql, values) } }

    /// Runs one INSERT and returns the new row's id (no other thread's insert can come between).
    public func insert(_ sql: String, _ values: SQLValue...) throws -> Int64 { try insert(sql, values) }

    public func insert(_ sql: String, _ values: [SQLValue]) throws -> Int64 {
        try locked {
            try runLocked(sql, values)
            return sqlite3_last_insert_rowid(handle)
        }
    }

    @discardableResult
    private func runLocked(_ sql: String, _ values: [SQLValue]) throws -> Int {
        let stmt = try statement(sql)
        try bind(stmt, values)
        defer { sqlite3_reset(stmt) }
        var rc = sqlite3_step(stmt)
        while rc == SQLITE_ROW { rc = sqlite3_step(stmt) }
        if rc != SQLITE_DONE { throw error(rc) }
        return Int(sqlite3_changes(handle))
    }

    /// Runs a query and returns every row.
    public func query(_ sql: String, _ values: SQLValue...) throws -> [[SQLValue]] {
        var rows: [[SQLValue]] = []
        try forEach(sql, values) { rows.append($0) }
        return rows
    }

    /// Runs a query and hands each row to `body` without collecting them.
    public func forEach(_ sql: String, _ values: [SQLValue], _ body: ([SQLValue]) throws -> Void) throws {
        try locked { try forEachLocked(sql, values, body) }
    }

    private func forEachLocked(_ sql: String, _ values: [SQLValue], _ body: ([SQLValue]) throws -> Void) throws {
        let stmt = try statement(sql)
        try bind(stmt, values)
        defer { sqlite3_reset(stmt) }
        while true {
            let rc = sqlite3_step(stmt)
            if rc == SQLITE_DONE { break }
            guard rc == SQLITE_ROW else { throw error(rc) }
            let n = sqlite3_column_count(stmt)
            var row: [SQLValue] = []
            row.reserveCapacity(Int(n))
            for c in 0..<n {
                switch sqlite3_column_type(stmt, c) {
                case SQLITE_INTEGER: row.append(.int(sqlite3_column_int64(stmt, c)))
                case SQLITE_FLOAT: row.append(.real(sqlite3_column_double(stmt, c)))
                case SQLITE_TEXT: row.append(.text(String(cString: sqlite3_column_text(stmt, c))))
                case SQLITE_BLOB:
                    let count = Int(sqlite3_column_bytes(stmt, c))
                    if count == 0 { row.append(.blob([])) } else {
                        let p = sqlite3_column_blob(stmt, c)!
                        row.append(.blob(Array(UnsafeRawBufferPointer(start: p, count: count))))
                    }
                default: row.append(.null)
                }
            }
            try body(row)
        }
    }

    /// Runs `body` in one immediate transaction; `durable` makes the commit wait for the disk.
    /// Runs `body` in the transaction this thread is in, or in one of its own when there is none: the
    /// step is atomic either way (transactions do not nest).
    public func atomically<T>(_ body: () throws -> T) throws -> T {
        try locked {
            if sqlite3_get_autocommit(handle) == 0 { return try body() }
            return try transaction(body)
        }
    }

    /// SQLite's write transactions (`BEGIN IMMEDIATE`) are serialized whole: nothing more to wait for.
    public func serialize(_ key: Int64) throws {}
    public var lockingRead: String { "" }

    public func transaction<T>(durable: Bool = false, _ body: () throws -> T) throws -> T {
        try locked {
            if durable { try executeLocked("PRAGMA synchronous=FULL") }
            defer { if durable { try? executeLocked("PRAGMA synchronous=NORMAL") } }
            try executeLocked("BEGIN IMMEDIATE")
            do {
                let result = try body()
                try executeLocked("COMMIT")
                return result
            } catch {
                try? executeLocked("ROLLBACK")
                throw error
            }
        }
    }
}
