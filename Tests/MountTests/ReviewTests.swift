import Testing
import Foundation
import TestSupport

/// Persistence after review, through the kernel with two uids on a store shared with their group:
/// proposals bound to their root, reviews by another uid only, commits of what was approved, the
/// policy's rules, never-persist paths, and the audit log's chain.
@Suite(.enabled(if: canMount, "needs /dev/fuse"), .timeLimit(.minutes(30)))
struct Reviews {
    @Test func anotherUidApprovesAndTheCommitIsWhatWasProposed() throws {
        try inMount(#"""
        set -E  # the ERR trap's line also for failures inside a() and b()
        export AETHERFS_STORE=$T/team
        a() { setpriv --reuid 1000 --regid 2000 --clear-groups "$@"; }
        b() { setpriv --reuid 1001 --regid 2000 --clear-groups "$@"; }
        $A init --shared 2000 > /dev/null
        [ "$(stat -c %a:%g $T/team)" = 2770:2000 ]
        a $A session create work > /dev/null
        mkdir $T/w; $A mount --session work --allow-other $T/w > /dev/null
        trap '$A unmount $T/w >/dev/null 2>&1 || fusermount3 -uz $T/w 2>/dev/null || true; true' EXIT
        W=$T/w
        cat > $T/policy.json <<'JSON'
        {"branches": {"main": {"require_proposal": true, "approvals": 1, "required_meta": ["ticket"]}},
         "never_persist": [".env", "**/*.pem"]}
        JSON
        # Only the store's owner (root here) sets the policy; a bad one is refused whole.
        if a $A policy set $T/policy.json 2>err; then exit 1; fi; has 'owner' err
        echo '{"branches": {"main": {"aprovals": 1}}}' > $T/bad.json
        if $A policy set $T/bad.json 2>err; then exit 1; fi; has 'unknown key "aprovals"' err
        echo '{"never_persist": ["[oops"]}' > $T/bad.json
        if $A policy set $T/bad.json 2>err; then exit 1; fi; has "unclosed" err
        $A policy set $T/policy.json > /dev/null
        $A policy show --json | has '"require_proposal":true'

        a sh -c "echo v1 > $W/code; echo SECRET=1 > $W/.env; mkdir $W/keys; echo k > $W/keys/id.pem"
        # A direct commit to the protected branch: EACCES, with the reason in .aether/last.
        if a bash -c "echo ship > $W/.aether/commit" 2>err; then exit 1; fi; has -i 'permission denied' err
        a cat $W/.aether/last | has 'must be of an approved proposal'
        # A proposal without the required key: EINVAL naming it.
        if a bash -c "echo 'no ticket' > $W/.aether/propose" 2>err; then exit 1; fi; has -i 'invalid argument' err
        a cat $W/.aether/last | has '"ticket"'
        a sh -c "echo '{\"message\":\"add code\",\"meta\":{\"ticket\":\"T-1\"}}' > $W/.aether/propose"
        P=$(a cat $W/.aether/last | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
        ROOT=$(a cat $W/.aether/last | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["root"])')
        a cat $W/.aether/last | has '"withheld":"2"'
        # Edits after proposing do not change the proposal.
        a sh -c "echo v2 > $W/code"
        # The author may not approve; neither may a uid that changed the session's files.
        if a $A review $P --approve 2>err; then exit 1; fi; has 'another uid must review it' err
        # B signs its review with a key of its own (the store keeps the public half).
        mkdir -m 777 $T/keys
        b env AETHERFS_KEY=$T/keys/b $A key create > out; has 'made key' out
        [ "$(stat -c %a:%u $T/keys/b)" = 600:1001 ]
        b env AETHERFS_KEY=$T/keys/b $A review $P --approve -m "looks right" > out; has 'it is approved' out
        a sh -c "echo '{\"proposal\":\"$P\"}' > $W/.aether/commit"
        [ "$($A show main --json | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["root"])')" = "$ROOT" ]
        $A show main --json | has '"approved_by":"uid:1001"'
        $A show main --json | has "\"proposal\":\"$P\""
        COMMIT=$($A show main --json | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
        $A verify --approvals | has 'of 1 commit(s) of proposals verify'
        # An approval whose signature was altered in the database no longer verifies, naming the commit.
        /usr/bin/python3 - $T/team/meta.db <<'PY'
        import base64, json, sqlite3, sys
        c = sqlite3.connect(sys.argv[1])
        rid, env = c.execute("SELECT id, envelope FROM reviews WHERE envelope != ''").fetchone()
        e = json.loads(env)
        sig = bytearray(base64.b64decode(e["signatures"][0]["sig"])); sig[0] ^= 1
        e["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
        c.execute("UPDATE reviews SET envelope = ? WHERE id = ?", (json.dumps(e), rid)); c.commit()
        PY
        if $A verify --approvals > out; then exit 1; fi
        has "commit $COMMIT: the approval by uid 1001 has no valid signature" out
        [ "$(cat $W/code)" = v2 ] && [ -e $W/.env ]
        # The commit and its view leave the never-persist paths out; the session and its checkpoints keep them.
        [ ! -e $W/.aether/commits/main/latest/.env ] && [ ! -e $W/.aether/commits/main/latest/keys/id.pem ]
        [ "$(cat $W/.aether/commits/main/latest/code)" = v1 ]
        ls $W/.aether/checkpoints/*/.env > /dev/null
        ! $A export main -o - | tar -tf - | has -F .env
        # An export of a checkpoint that holds them leaves them out too, and says so.
        ! $A export work@cp-1 -o - 2>err | tar -tf - | has -F .env; has '2 entries withheld' err
        # A committed proposal takes no more reviews and is not committed twice.
        if b $A review $P --approve 2>err; then exit 1; fi; has 'committed' err
        if a sh -c "echo '{\"proposal\":\"$P\"}' > $W/.aether/commit" 2>/dev/null; then exit 1; fi

        # A uid that wrote to the session is not an independent reviewer of what it proposes next.
        chmod 777 $W; b sh -c "echo from-b > $W/b-file"
        a sh -c "echo '{\"message\":\"more\",\"meta\":{\"ticket\":\"T-2\"}}' > $W/.aether/propose"
        P2=$(a cat $W/.aether/last | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
        if b $A review $P2 --approve 2>err; then exit 1; fi; has 'changed files of the proposal' err
        a $A proposal withdraw $P2 > /dev/null
        $A proposals --state withdrawn --json | has "$P2"

        # Uid B may not restore or commit in A's session: EACCES, never EIO, mounted or not.
        if b bash -c "echo cp-1 > $W/.aether/restore" 2>err; then exit 1; fi; has -i 'permission denied' err
        if b $A restore work cp-1 2>err; then exit 1; fi; has -i 'permission denied' err; ! has -i 'input/output' err
        # What the policy lets others do, they may do through the mount too: its request file is theirs to write.
        sed 's/"never_persist"/"sessions": {"others_may": ["checkpoint"]}, "never_persist"/' $T/policy.json > $T/others.json
        $A policy set $T/others.json > /dev/null
        [ "$(stat -c %a $W/.aether/checkpoint)" = 666 ] && [ "$(stat -c %a $W/.aether/restore)" = 644 ]
        b bash -c "echo 'by b' > $W/.aether/checkpoint"
        $A checkpoints work --json | has '"author":1001'
        if b bash -c "echo cp-1 > $W/.aether/restore" 2>err; then exit 1; fi; has -i 'permission denied' err
        $A unmount $W > /dev/null
        if b $A commit work -m "by b" 2>err; then exit 1; fi; has 'may commit in it' err
        if b $A restore work cp-1 2>err; then exit 1; fi; has 'may restore in it' err

        # The audit log holds every action and refusal, chained; an edit in the database breaks it.
        $A audit --json | /usr/bin/python3 -c '
        import json, sys
        log = json.load(sys.stdin)
        actions = [(e["action"], e["result"].split(":")[0]) for e in log]
        for want in [("policy-set", "refused"), ("policy-set", "ok"), ("commit", "refused"), ("propose", "refused"), ("propose", "ok"),
                     ("review", "refused"), ("review", "ok"), ("commit", "ok"), ("withdraw", "ok"), ("restore", "refused")]:
            assert want in actions, (want, actions)
        '
        $A audit --verify | has intact
        n=$($A audit --json | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)[4]["id"])')
        /usr/bin/python3 -c "import sqlite3; c = sqlite3.connect('$T/team/meta.db'); c.execute(\"UPDATE audit SET detail = 'forged' WHERE id = $n\"); c.commit()"
        if $A audit --verify 2>err; then exit 1; fi; has "breaks at entry $n" err
        """#, timeout: 600)
    }

    /// A fork tournament: three forks of one session; promoting one commits it and retires the other
    /// two in one action and one audit entry; retired forks stay readable, are not mounted or changed.
    @Test func promoteCommitsTheWinnerAndRetiresItsSiblings() throws {
        try inMount(#"""
        set -E
        echo base > base.txt; echo '{"message":"start","name":"start"}' > .aether/checkpoint
        for f in a b c; do echo "try-$f@start" > .aether/fork; done
        mkdir $T/b; $A mount --session try-b $T/b > /dev/null
        trap '$A unmount $T/b >/dev/null 2>&1 || fusermount3 -uz $T/b 2>/dev/null || true; true' EXIT
        echo winner > $T/b/result
        before=$($A audit --json | /usr/bin/python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
        # Promoting through the winner's daemon (it is mounted).
        $A promote try-b -m "b is fastest" > out; has 'retired try-a,try-c' out
        $A audit --json | /usr/bin/python3 -c "
        import json, sys
        new = json.load(sys.stdin)[$before:]
        assert [e['action'] for e in new] == ['promote'], new
        assert 'retired try-a,try-c' in new[0]['detail'], new
        "
        $A session list --json | /usr/bin/python3 -c '
        import json, sys
        states = {s["name"]: s["state"] for s in json.load(sys.stdin)}
        assert states["try-b"] == "won" and states["try-a"] == states["try-c"] == "retired" and states["s"] == "active", states
        '
        [ "$(cat $M/.aether/commits/main/latest/result)" = winner ]
        $A show main --json | has '"promoted_over":"try-a,try-c"'
        # Retired forks: readable, never mounted or changed; a fork of one works.
        $A export try-a -o - | tar -tf - | has './base.txt'
        mkdir $T/a; if $A mount --session try-a $T/a 2>err; then exit 1; fi; has retired err
        if $A checkpoint try-a -m x 2>err; then exit 1; fi; has 'retired' err
        if $A session retire try-a 2>err; then exit 1; fi; has 'retired already' err
        $A fork try-a revived > /dev/null && $A checkpoint revived -m "works again" > /dev/null
        # Retiring a mounted session is refused; a session that is no fork is not promoted.
        if $A session retire try-b 2>err; then exit 1; fi; has -i 'in use' err
        if $A promote s 2>err; then exit 1; fi; has 'not a fork' err
        """#)
    }
}
