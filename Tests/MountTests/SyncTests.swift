import Testing
import Foundation
import TestSupport

/// Sync between stores, through a path and over HTTP: only what the receiver lacks is sent, what
/// arrives is closed and verifies, references move by compare-and-swap, and a receiver killed in the
/// middle of a push moves nothing until the next push completes.
@Suite(.enabled(if: canMount, "needs /dev/fuse"), .timeLimit(.minutes(30)))
struct Syncing {
    @Test func pushAndPullSendOnlyWhatIsMissingAndMoveBranchesByCompareAndSwap() throws {
        try inMount(#"""
        sent() { /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["objects_sent"])'; }
        mkdir d; for i in $(seq 200); do head -c 20000 /dev/urandom > d/f$i; done; ln d/f1 d/hard; ln -s f2 d/link
        echo one > .aether/checkpoint; echo c1 > .aether/commit; echo "child@cp-1" > .aether/fork
        B="env AETHERFS_STORE=$T/b"
        [ $($A sync push $T/b --branch main --session child --json | sent) -gt 200 ]
        [ $($A sync push $T/b --branch main --session child --json | sent) = 0 ]
        $B $A verify --read-data > /dev/null
        $B $A session list --json | has '"name":"child"' && $B $A session list --json | has '"parent":"s"'
        $B $A export child -o - | cmp - <($A export s@cp-1 -o -)
        [ "$($B $A log main --json | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["message"])')" = c1 ]
        # The receiver's mount shows the tree.
        mkdir $T/bm; $B $A mount --session child $T/bm > /dev/null
        trap '$A unmount $T/bm > /dev/null 2>&1 || fusermount3 -uz $T/bm 2> /dev/null || true; kill $pid 2> /dev/null || true; true' EXIT
        diff -r --no-dereference d $T/bm/d
        # A branch that moved on the receiver: a push is refused (nothing moves), --force moves it.
        echo theirs > $T/bm/theirs; echo '{"message":"theirs","allow_empty":true}' > $T/bm/.aether/commit
        $A unmount $T/bm > /dev/null
        echo mine > mine; echo c2 > .aether/commit
        ! $A sync push $T/b --branch main 2> $T/err && has 'branch main' $T/err
        [ "$($B $A log main --json | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["message"])')" = theirs ]
        $A sync push $T/b --branch main --force > /dev/null
        [ "$($B $A log main --json | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["message"])')" = c2 ]
        $B $A audit --json | has 'force'
        # Over HTTP: a serve of a third store; a read token cannot push; pull into a fourth.
        C="env AETHERFS_STORE=$T/c"
        $C $A init > /dev/null
        $C $A token create w --scope write > $T/w 2> /dev/null; $C $A token create r --scope read > $T/r 2> /dev/null
        $C $A serve --listen 127.0.0.1:0 > $T/serve.out 2>&1 & pid=$!
        for i in $(seq 200); do grep -q listening $T/serve.out && break; sleep 0.05; done
        u=http://$(sed -n 's/^listening on //p' $T/serve.out)
        ! AETHERFS_TOKEN=$(cat $T/r) $A sync push $u --branch main 2> $T/err && has 'permission denied' $T/err
        [ $(AETHERFS_TOKEN=$(cat $T/w) $A sync push $u --branch main --session s --json | sent) -gt 200 ]
        [ $(AETHERFS_TOKEN=$(cat $T/w) $A sync push $u --branch main --session s --json | sent) = 0 ]
        D="env AETHERFS_STORE=$T/d"
        $D $A init > /dev/null
        [ $(AETHERFS_TOKEN=$(cat $T/r) $D $A sync pull $u --branch main --json | sent) -gt 200 ]
        $D $A export main -o - | cmp - <($A export main -o -)
        kill $pid; wait $pid || true
        $C $A verify --read-data > /dev/null && $D $A verify --read-data > /dev/null
        """#, timeout: 600)
    }

    /// SIGKILL of the receiving serve in the middle of a push: nothing moved; after a restart the next
    /// push completes, the branch moves once, and the store verifies.
    @Test func aReceiverKilledMidPushMovesNothingAndTheNextPushFinishes() throws {
        try inMount(#"""
        head -c 60000000 /dev/urandom > big; echo c1 > .aether/commit
        C="env AETHERFS_STORE=$T/c"
        $C $A init > /dev/null; $C $A token create w --scope write > $T/w 2> /dev/null
        start() { $C $A serve --listen 127.0.0.1:0 > $T/serve.out 2>&1 & pid=$!; for i in $(seq 200); do grep -q listening $T/serve.out && break; sleep 0.05; done; u=http://$(sed -n 's/^listening on //p' $T/serve.out); }
        trap 'kill $pid 2> /dev/null || true; true' EXIT
        start
        AETHERFS_TOKEN=$(cat $T/w) $A sync push $u --branch main > $T/push.out 2>&1 & push=$!
        # Kill the receiver once objects have begun to arrive.
        for i in $(seq 400); do [ "$(find $T/c/objects -type f | wc -l)" -gt 20 ] && break; sleep 0.02; done
        kill -9 $pid; wait $pid 2> /dev/null || true
        ! wait $push
        ! $C $A branch list | has main
        start
        AETHERFS_TOKEN=$(cat $T/w) $A sync push $u --branch main > /dev/null
        [ "$($C $A audit --json | /usr/bin/python3 -c 'import json,sys; print(len([e for e in json.load(sys.stdin) if e["action"] == "sync" and e["detail"].startswith("branch main")]))')" = 1 ]
        $C $A export main -o - | cmp - <($A export main -o -)
        kill $pid; wait $pid || true
        $C $A verify --read-data > /dev/null
        """#, timeout: 600)
    }
}
