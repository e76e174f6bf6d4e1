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
        (.system(EXDEV, "x"), EXDEV),
    ])
    func eachDomainErrorHasItsErrno(error: AetherError, code: Int32) {
        #expect(errnoCode(for: error) == code)
    }
}
