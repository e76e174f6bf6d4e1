/* Linux calls that Glibc's Swift module does not show (they need _GNU_SOURCE). */
int syncfs(int fd);
#include <sys/xattr.h>
