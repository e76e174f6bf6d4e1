import Testing
import Foundation
import TestSupport

/// What another local user can reach of a store and its mounts.
@Suite(.enabled(if: canMount, "needs /dev/fuse"), .timeLimit(.minutes(30)))
struct StorePrivacy {
    /// Objects hold file data in plain text: a store is private to its owner (0700 directories, 0600
    /// files), and a user who cannot read it is told "permission denied" in one line.
    @Test func aStoreIsPrivateToItsOwner() throws {
        guard getuid() == 0 else { return }
        let m = try MountedSession()
        defer { m.close() }
        let r = m.sh(#"""
        as() { setpriv --reuid 1000 --regid 1000 --clear-groups "$@"; }
        mkdir secret; chmod 700 secret; echo SECRET-7e1 > secret/f; chmod 600 secret/f
        echo cp > .aether/checkpoint
        leaks=$(find $S ! -type l -perm /077 | head -5)
        [ -z "$leaks" ] || { echo "group/other bits on: $leaks" >&2; exit 1; }
        [ "$(stat -c %a $S)" = 700 ]
        if as grep -rl SECRET-7e1 $S 2>/dev/null; then echo "another uid read the data" >&2; exit 1; fi
        for verb in "session list" "diff s@cp s" "verify" "log" "checkpoints s"; do
          if as $A $verb --store $S >$T/out 2>$T/err; then echo "$verb worked for uid 1000" >&2; exit 1; fi
          [ "$(wc -l < $T/err)" = 1 ] || { cat $T/err >&2; exit 1; }
          has 'permission denied' $T/err || { cat $T/err >&2; exit 1; }
        done
        # a store it may not create: one line, no store made
        if as $A session list --store $T/typo 2>$T/err; then exit 1; fi
        [ ! -e $T/typo ]
        # only init, mount and session create make a store
        if $A session list --store $T/typo 2>$T/err; then exit 1; fi
        has 'no store' $T/err; [ ! -e $T/typo ]
        """#)
        #expect(r.status == 0, "\(r)")
    }

    /// A store whose FORMAT file is gone is refused by every verb, never made anew over its files.
    @Test func aStoreWithoutFormatIsRefusedByEveryVerb() throws {
        let m = try MountedSession()
        defer { m.close() }
        m.unmount()
        let r = m.sh(#"""
        cd /; rm $S/FORMAT
        for verb in "verify" "session list" "mount --session s $M" "init"; do
          if $A $verb --store $S >$T/out 2>$T/err; then echo "$verb accepted a store without FORMAT" >&2; exit 1; fi
          has 'no FORMAT file' $T/err || { cat $T/err >&2; exit 1; }
        done
        [ ! -e $S/FORMAT ]
        """#)
        #expect(r.status == 0, "\(r)")
    }
}

/// Mounting where something is, or was, mounted.
@Suite(.enabled(if: canMount, "needs /dev/fuse"), .timeLimit(.minutes(30)))
struct MountPlaces {
    /// After `kill -9` of the daemon, `mount` detaches the dead mount itself and serves the session again.
    @Test func mountAfterTheDaemonDiedNeedsNoManualStep() throws {
        let m = try MountedSession()
        defer { m.close() }
        #expect(m.sh("echo kept > f; sync -f f").status == 0)
        if let pid = m.daemonPID { kill(pid, SIGKILL) }
        usleep(300_000)
        let r = m.sh(#"""
        cd /
        if ls $M 2>/dev/null; then echo "the mount still answered" >&2; exit 1; fi
        $A mount --session s $M
        [ "$(cat $M/f)" = kept ]
        # a live mount is not detached
        if $A mount --session s $M 2>$T/err; then exit 1; fi
        has 'already' $T/err; [ "$(cat $M/f)" = kept ]
        """#)
        #expect(r.status == 0, "\(r)")
    }

    /// Mounting over files would hide them silently: refused unless `--nonempty`.
    @Test func aNonEmptyDirectoryNeedsNonempty() throws {
        let m = try MountedSession()
        defer { m.close() }
        m.unmount()
        let r = m.sh(#"""
        cd /; touch $M/hidden
        if $A mount --session s $M 2>$T/err; then exit 1; fi
        has 'is not empty' $T/err; [ -e $M/hidden ]
        $A mount --nonempty --session s $M; [ ! -e $M/hidden ]
        $A unmount $M; [ -e $M/hidden ]; rm $M/hidden
        """#)
        #expect(r.status == 0, "\(r)")
        try m.mount()
    }
}
