#ifndef AETHERFS_CFUSE_SHIM_H
#define AETHERFS_CFUSE_SHIM_H
/* The one place FUSE_USE_VERSION is defined. */
#define FUSE_USE_VERSION 312
#include <fuse3/fuse_lowlevel.h>
#include <sys/xattr.h>
#include <sys/stat.h>
#include <errno.h>

/* Not visible to Swift without _GNU_SOURCE. */
#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif
#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif
#ifndef RENAME_WHITEOUT
#define RENAME_WHITEOUT (1 << 2)
#endif
static const unsigned int cfuse_rename_noreplace = RENAME_NOREPLACE;
static const unsigned int cfuse_rename_whiteout = RENAME_WHITEOUT;
static const unsigned int cfuse_rename_exchange = RENAME_EXCHANGE;
static const int cfuse_xattr_create = XATTR_CREATE;
static const int cfuse_xattr_replace = XATTR_REPLACE;

/* libfuse 3.17 turns these into macros; wrap them once here. */
static inline struct fuse_session *cfuse_session_new(struct fuse_args *args,
        const struct fuse_lowlevel_ops *ops, void *userdata) {
    return fuse_session_new(args, ops, sizeof(*ops), userdata);
}
static inline int cfuse_session_loop_mt(struct fuse_session *se, int clone_fd, unsigned int max_idle) {
    struct fuse_loop_config *config = fuse_loop_cfg_create();
    fuse_loop_cfg_set_clone_fd(config, clone_fd);
    fuse_loop_cfg_set_max_threads(config, 16);
    fuse_loop_cfg_set_idle_threads(config, max_idle);
    int rc = fuse_session_loop_mt(se, config);
    fuse_loop_cfg_destroy(config);
    return rc;
}
#endif
