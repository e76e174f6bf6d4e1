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
    case .system(let code, _): code
    }
}

extension FSFailure {
    init(_ error: AetherError) {
        self.init(code: errnoCode(for: error), message: error.description)
    }
}
