/* Linux calls that Glibc's Swift module does not show (they need _GNU_SOURCE). */
int syncfs(int fd);
int fallocate(int fd, int mode, long offset, long len);
#include <sys/xattr.h>

/* Per-thread flags of the FUSE request being served: libfuse reads a request and serves it on the same
   thread, so its read hook can note what libfuse 3.14 does not pass on. */
static inline unsigned *aether_request_flags(void) { static __thread unsigned flags; return &flags; }

/* The FUSE request this thread serves (its unique id, opcode and when it was read), for latencies. */
struct aether_request_clock { unsigned long long unique; unsigned opcode; long long started; };
static inline struct aether_request_clock *aether_request_clock(void) { static __thread struct aether_request_clock c; return &c; }

/* This thread's file-system uid and gid (the ids a FUSE daemon hears as the request's); each returns
   the previous one. */
#include <sys/fsuid.h>
