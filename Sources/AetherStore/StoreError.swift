#if canImport(Glibc)
import Glibc
#endif
import AetherModel

/// What can go wrong below the snapshot model: object files and the disk.
public enum StoreError: Error, Equatable, CustomStringConvertible {
    /// An object that something refers to is not in the store.
    case missing(ObjectID)
    /// An object's file does not decode, or its bytes do not hash to its id.
    case damaged(ObjectID, String)
    /// The disk holding the store is full.
    case noSpace(String)
    /// A system call failed: its errno and what was being done.
    case io(Int32, String)
    /// The store was written by a newer or unknown format.
    case unsupportedFormat(String)

    public var description: String {
        switch self {
        case .missing(let id): "object \(id.hex) is missing from the store"
        case .damaged(let id, let why): "object \(id.hex) is damaged: \(why)"
        case .noSpace(let what): "no space left on the store's disk (\(what))"
        case .io(let code, let what): "\(what): \(String(cString: strerror(code)))"
        case .unsupportedFormat(let why): why
        }
    }

    /// Builds the error for the current `errno`.
    public static func fromErrno(_ what: String, _ code: Int32 = errno) -> StoreError {
        code == ENOSPC || code == EDQUOT ? .noSpace(what) : .io(code, what)
    }
}
