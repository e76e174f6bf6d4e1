import Testing
import Glibc
import AetherModel
import AetherCore
import AetherVFS

@Suite struct ErrnoTableTests {
    @Test(arguments: [
        (AetherError.notFound("x"), ENOENT), (.exists("x"), EEXIST), (.notEmpty, ENOTEMPTY), (.notDirectory, ENOTDIR),
        (.isDirectory, EISDIR), (.invalid("x"), EINVAL), (.nameTooLong, ENAMETOOLONG), (.notPermitted("x"), EPERM),
        (.accessDenied("x"), EACCES), (.readOnly, EROFS), (.busy("x"), EBUSY), (.noAttribute, ENODATA), (.range, ERANGE),
        (.tooBig, E2BIG), (.notSupported("x"), EOPNOTSUPP), (.branchMoved("x"), EAGAIN), (.noSpace("x"), ENOSPC), (.damaged("x"), EIO), (.cancelled("x"), ECANCELED),
        (.noMoreData("x"), ENXIO), (.badHandle("x"), EBADF), (.attributesFull("x"), ENOSPC), (.system(EXDEV, "x"), EXDEV), (.failed("x"), EIO),
    ])
    func eachDomainErrorHasItsErrno(error: AetherError, code: Int32) {
        #expect(errnoCode(for: error) == code)
    }

    /// Read backwards, the table gives each errno's one domain case (the CLI names a mounted session's
    /// failures by it); EIO, which damage shares with every other I/O error, and errnos the table never
    /// gives stay system errors.
    @Test func theTableReadsBackAndEveryCaseIsListed() {
        let every = AetherError.every("m")
        #expect(Set(every.map(\.code)).count == every.count, "each case once")
        for e in every where e != .damaged("m") && e != .attributesFull("m") {
            #expect(domainError(errno: errnoCode(for: e), "m") == e, "\(e)")
        }
        #expect(domainError(errno: EIO, "m") == nil && errorCode(for: .system(EIO, "disk")) == "system")
        #expect(domainError(errno: EXDEV, "m") == nil)
        #expect(errorCode(for: .system(ENOENT, "no session x")) == "not_found")
        #expect(errorCode(for: .system(EAGAIN, "moved")) == "branch_moved")
        #expect(errnoName(EACCES) == "EACCES" && errnoName(ENXIO) == "ENXIO" && errnoName(9999) == "errno 9999")
    }
}
