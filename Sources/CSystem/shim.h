/* Linux calls that Glibc's Swift module does not show (they need _GNU_SOURCE). */
int syncfs(int fd);
int fallocate(int fd, int mode, long offset, long len);
#include <sys/xattr.h>
