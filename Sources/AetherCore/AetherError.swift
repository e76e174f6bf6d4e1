#if canImport(Glibc)
import Glibc
#endif
import AetherModel
import AetherStore
import AetherMeta

/// The domain's errors. The VFS maps each to one errno in one table; the CLI prints `description`.
public enum AetherError: Error, Equatable, CustomStringConvertible {
    /// No such file, session, checkpoint or snapshot. (ENOENT)
    case notFound(String)
    /// The name is taken. (EEXIST)
    case exists(String)
    /// A directory that must be empty is not. (ENOTEMPTY)
    case notEmpty
    /// A path component is not a directory. (ENOTDIR)
    case notDirectory
    /// The operation needs a non-directory. (EISDIR)
    case isDirectory
    /// The request is malformed: a bad payload, name or argument. (EINVAL)
    case invalid(String)
    /// A name longer than 255 bytes. (ENAMETOOLONG)
    case nameTooLong
    /// The caller may not do this. (EPERM)
    case notPermitted(String)
    /// Access denied. (EACCES)
    case accessDenied(String)
    /// The target is read-only. (EROFS)
    case readOnly
    /// The session is busy: mounted elsewhere or locked by another process. (EBUSY)
    case busy(String)
    /// An extended attribute does not exist. (ENODATA)
    case noAttribute
    /// A buffer is too small for the value. (ERANGE)
    case range
    /// A value is too large. (E2BIG)
    case tooBig
    /// The operation is not supported here. (ENOTSUP)
    case notSupported(String)
    /// The branch moved since the session's base: not a fast-forward. (EAGAIN)
    case branchMoved(String)
    /// The store's disk is full. (ENOSPC)
    case noSpace(String)
    /// The store is damaged or an object failed verification. (EIO)
    case damaged(String)
    /// The caller asked to stop (SIGINT); nothing changed. (ECANCELED)
    case cancelled(String)
    /// Nothing of the kind asked for at or after an offset (SEEK_DATA, SEEK_HOLE). (ENXIO)
    case noMoreData(String)
    /// A handle used for what it was not opened for. (EBADF)
    case badHandle(String)
    /// A file's extended attributes would no longer fit its list. (ENOSPC, as on ext4)
    case attributesFull(String)
    /// A system call failed with this errno: what the kernel said, passed on as it is.
    case system(Int32, String)
    /// A failure below or of our own that is not damage to the store: a metadata I/O error, a promise
    /// broken (a record that should have been written). (EIO)
    case failed(String)

    public var description: String {
        switch self {
        case .notFound(let what): "not found: \(what)"
        case .exists(let what): "already exists: \(what)"
        case .notEmpty: "directory not empty"
        case .notDirectory: "not a directory"
        case .isDirectory: "is a directory"
        case .invalid(let why): "invalid request: \(why)"
        case .nameTooLong: "name too long (255 bytes at most)"
        case .notPermitted(let why): "not permitted: \(why)"
        case .accessDenied(let why): "permission denied: \(why)"
        case .readOnly: "read-only"
        case .busy(let why): "busy: \(why)"
        case .noAttribute: "no such attribute"
        case .range: "value larger than the buffer"
        case .tooBig: "value too large"
        case .notSupported(let what): "not supported: \(what)"
        case .branchMoved(let why): why
        case .noSpace(let what): "store full: \(what)"
        case .damaged(let what): "store damaged: \(what)"
        case .cancelled(let what): "cancelled: \(what)"
        case .noMoreData(let what): what
        case .badHandle(let what): what
        case .attributesFull(let what): what
        case .system(_, let what): what
        case .failed(let what): what
        }
    }

    /// A stable name for the kind of error, for `--json` output (and, later, HTTP bodies). A system
    /// error is "system" here; the boundary that knows its errno names it (`errorCode(for:)`).
    public var code: String {
        switch self {
        case .notFound: "not_found"
        case .exists: "exists"
        case .notEmpty: "not_empty"
        case .notDirectory: "not_directory"
        case .isDirectory: "is_directory"
        case .invalid: "invalid"
        case .nameTooLong: "name_too_long"
        case .notPermitted: "not_permitted"
        case .accessDenied: "permission_denied"
        case .readOnly: "read_only"
        case .busy: "busy"
        case .noAttribute: "no_attribute"
        case .range: "range"
        case .tooBig: "too_big"
        case .notSupported: "not_supported"
        case .branchMoved: "branch_moved"
        case .noSpace: "no_space"
        case .damaged: "damaged"
        case .cancelled: "cancelled"
        case .noMoreData: "no_more_data"
        case .badHandle: "bad_handle"
        case .attributesFull: "attributes_full"
        case .system: "system"
        case .failed: "failed"
        }
    }

    /// One error of each case, those that carry a message carrying `message`, for tables that read
    /// errno back into the domain; `system` and `failed` (EIO, as damage is) are not among them.
    public static func every(_ message: String) -> [AetherError] {
        [.notFound(message), .exists(message), .notEmpty, .notDirectory, .isDirectory, .invalid(message), .nameTooLong,
         .notPermitted(message), .accessDenied(message), .readOnly, .busy(message), .noAttribute, .range, .tooBig,
         .notSupported(message), .branchMoved(message), .noSpace(message), .damaged(message), .cancelled(message),
         .noMoreData(message), .badHandle(message), .attributesFull(message)]
    }

    /// Wraps lower layers' errors into the domain's vocabulary.
    public static func from(_ error: any Error) -> AetherError {
        switch error {
        case let e as AetherError: return e
        case let e as StoreError:
            switch e {
            case .missing, .damaged, .unsupportedFormat: return .damaged(e.description)
            case .noSpace: return .noSpace(e.description)
            case .io(let code, _): return .system(code, e.description)
            }
        case let e as DatabaseError:
            if e.isFull { return .noSpace(e.description) }
            if e.isBusy { return .busy(e.description) }
            if e.isCorrupt { return .damaged(e.description) }
            // An I/O error (its errno in the message) or a fault of ours: not damage to the store.
            return .failed(e.description)
        case let e as MetadataError:
            switch e.code {
            case .conflict: return .exists(e.message)
            case .damaged: return .damaged(e.description)
            case .invalid: return .invalid(e.message)
            case .accessDenied: return .accessDenied(e.message)
            case .unavailable: return .system(EIO, e.description)
            case .failed: return .failed(e.description)
            }
        case let e as FormatError: return .damaged(e.description)
        default: return .failed("\(error)")
        }
    }
}

/// Runs `body`, turning any error into an `AetherError`.
@inline(__always)
public func domain<T>(_ body: () throws -> T) throws(AetherError) -> T {
    do { return try body() } catch { throw AetherError.from(error) }
}
