#if canImport(Glibc)
import Glibc
#endif
import AetherModel
import AetherCore

/// A failed file system request: the errno the kernel gets, and the line a person reads.
public struct FSFailure: Error, CustomStringConvertible {
    public let code: Int32
    public let message: String
    public var description: String { message }
    public init(code: Int32, message: String) { self.code = code; self.message = message }
}

/// The one table from domain errors to errno.
public func errnoCode(for error: AetherError) -> Int32 {
    switch error {
    case .notFound: ENOENT
    case .exists: EEXIST
    case .notEmpty: ENOTEMPTY
    case .notDirectory: ENOTDIR
    case .isDirectory: EISDIR
    case .invalid: EINVAL
    case .nameTooLong: ENAMETOOLONG
    case .notPermitted: EPERM
    case .accessDenied: EACCES
    case .readOnly: EROFS
    case .busy: EBUSY
    case .noAttribute: ENODATA
    case .range: ERANGE
    case .tooBig: E2BIG
    case .notSupported: EOPNOTSUPP
    case .branchMoved: EAGAIN
    case .noSpace: ENOSPC
    case .damaged: EIO
    case .cancelled: ECANCELED
    case .noMoreData: ENXIO
    case .badHandle: EBADF
    case .attributesFull: ENOSPC
    case .system(let code, _): code
    case .failed: EIO
    }
}

/// The symbolic names of the errno values the table gives and the kernel's answers carry, for messages.
private let errnoNames: [Int32: String] = [
    ENOENT: "ENOENT", EEXIST: "EEXIST", ENOTEMPTY: "ENOTEMPTY", ENOTDIR: "ENOTDIR", EISDIR: "EISDIR",
    EINVAL: "EINVAL", ENAMETOOLONG: "ENAMETOOLONG", EPERM: "EPERM", EACCES: "EACCES", EROFS: "EROFS",
    EBUSY: "EBUSY", ENODATA: "ENODATA", ERANGE: "ERANGE", E2BIG: "E2BIG", EOPNOTSUPP: "EOPNOTSUPP",
    EAGAIN: "EAGAIN", ENOSPC: "ENOSPC", EIO: "EIO", ECANCELED: "ECANCELED", ENXIO: "ENXIO", EBADF: "EBADF",
    ENOSYS: "ENOSYS", EFBIG: "EFBIG", EXDEV: "EXDEV", EMLINK: "EMLINK", ENOTCONN: "ENOTCONN",
]

/// The symbolic name of an errno, for messages.
public func errnoName(_ code: Int32) -> String { errnoNames[code] ?? "errno \(code)" }

/// The domain error an errno stands for, the table read backwards (the CLI hears a mounted session's
/// answer as the errno of its write). EIO stays a system error: damage and other I/O errors share it.
public func domainError(errno code: Int32, _ message: String) -> AetherError? {
    guard code != EIO else { return nil }
    return AetherError.every(message).first { errnoCode(for: $0) == code }
}

/// The `--json` name of an error: its domain code, or, for a system error, that of its errno's kind.
public func errorCode(for error: AetherError) -> String {
    if case .system(let code, let message) = error, let known = domainError(errno: code, message) { return known.code }
    return error.code
}

/// What the adapter answers with `fuse_reply_err` for the protocol's own purposes, not for an error.
public enum KernelAnswer {
    /// To OPENDIR: the kernel then keeps every listing and sends no OPENDIR or RELEASEDIR again.
    public static let noOpendir = ENOSYS
}

extension FSFailure {
    public init(_ error: AetherError) {
        self.init(code: errnoCode(for: error), message: error.description)
    }
}
