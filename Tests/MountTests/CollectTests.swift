import Testing
import Foundation
import TestSupport

/// Garbage collection through the kernel: what a deleted session held alone is freed, nothing any
/// other session, checkpoint or commit reaches is lost, also while mounts write and checkpoint, and
/// a gc killed in its delete phase leaves a store that verifies and a second run finishes.
@Suite(.enabled(if: canMount, "needs /dev/fuse"), .timeLimit(.minutes(30)))
struct Collection {
    @Test func deletingASessionAndCollectingFreesWhatItAloneHeld() throws {
        try inMount(#"""
        head -c 100000000 /dev/urandom > shared; echo '{"message":"shared","name":"base"}' > .aether/checkpoint
        echo 'commit base' > .aether/commit
        echo "doomed@base" > .aether/fork
        mkdir $T/d; $A mount --session doomed $T/d > /dev/null
        trap '$A unmount $T/d >/dev/null 2>&1 || fusermount3 -uz $T/d 2>/dev/null || true; true' EXIT
        head -c 100000000 /dev/urandom > $T/d/own; echo own > $T/d/.aether/checkpoint
        # The mount's status has the session's usage line.
        st=$(/usr/bin/python3 -c 'import json,sys; u = json.load(open(sys.argv[1]))["usage"]; print(round(u["exclusive"] / 1048576), round(u["shared"] / 1048576))' $T/d/.aether/status)
        [ "${st% *}" -ge 90 ] && [ "${st% *}" -le 110 ] && [ "${st#* }" -ge 90 ] && [ "${st#* }" -le 110 ] || { echo "status usage: $st" >&2; exit 1; }
        $A unmount $T/d > /dev/null
        mib() { /usr/bin/python3 -c "import json,sys; print(round(json.load(sys.stdin)$1 / 1048576))"; }
        excl=$($A usage doomed --json | mib '["sessions"][0]["exclusive"]')
        [ $excl -ge 90 ] && [ $excl -le 110 ] || { echo "exclusive $excl MiB" >&2; exit 1; }
        $A session delete doomed > /dev/null
        before=$(du -sm $S/objects | cut -f1)
        would=$($A gc --dry-run --min-age 0s --json | mib '["deleted_bytes"]')
        [ $would -ge 90 ] && [ $would -le 110 ] || { echo "dry run: $would MiB" >&2; exit 1; }
        [ "$(du -sm $S/objects | cut -f1)" = "$before" ]
        # The default window keeps what was written less than an hour ago.
        [ "$($A gc --dry-run --json | mib '["deleted_bytes"]')" = 0 ]
        $A gc --min-age 0s --json > $T/gc.json
        after=$(du -sm $S/objects | cut -f1)
        freed=$((before - after)); [ $freed -ge 90 ] && [ $freed -le 110 ] || { echo "freed $freed MiB" >&2; exit 1; }
        cmp shared .aether/checkpoints/base/shared && cmp shared .aether/commits/main/latest/shared
        $A export main -o - | tar -xOf - ./shared | cmp - shared
        $A verify --read-data > /dev/null
        $A audit --json | has '"action":"gc"'
        [ "$($A gc --min-age 0s --json | mib '["deleted_bytes"]')" = 0 ]
        """#, timeout: 900)
    }

    /// Two mounts write new data and checkpoint in a loop while gc runs again and again, with the
    /// default window and with none; afterwards every checkpoint that returned reads back byte-exact.
    @Test(arguments: ["1h", "0s"]) func gcUnderWritersLosesNothing(_ window: String) throws {
        try inMount(#"""
        echo "b" > .aether/fork
        mkdir $T/b; $A mount --session b $T/b > /dev/null
        trap '$A unmount $T/b >/dev/null 2>&1 || fusermount3 -uz $T/b 2>/dev/null || true; true' EXIT
        writer() {  # dir, tag: new data, a checkpoint, its sha, every round; some files removed again
          local n=0
          while [ ! -e $T/stop ]; do
            n=$((n + 1))
            head -c $((200000 + RANDOM * 20)) /dev/urandom > $1/f$((n % 7))
            if [ -e $T/pool/r$((n % 5)) ]; then cp $T/pool/r$((n % 5)) $1/p$((n % 3)) 2>/dev/null || true; fi
            if echo "{\"message\":\"m\",\"name\":\"$2-$n\"}" > $1/.aether/checkpoint; then
              ( cd $1 && sha256sum f* ) > $T/sums-$2-$n
            fi
            if [ $((n % 3)) = 0 ]; then rm -f $1/f$(((n + 3) % 7)); fi
          done
          return 0
        }
        # Garbage all the time: data imported into a session that is deleted at once; the writers
        # then write the same bytes again, deduplicating against objects gc may be condemning.
        mkdir $T/pool
        churner() {
          local k=0
          while [ ! -e $T/stop ]; do
            k=$((k + 1)); mkdir -p $T/junk$k; head -c 150000 /dev/urandom > $T/junk$k/r; cp $T/junk$k/r $T/pool/r$((k % 5))
            tar -cf $T/junk$k.tar -C $T/junk$k . && $A import $T/junk$k.tar --session junk$k > /dev/null && $A session delete junk$k > /dev/null
            rm -rf $T/junk$k $T/junk$k.tar
          done
          return 0
        }
        churner & w3=$!
        writer $M s & w1=$!
        writer $T/b b & w2=$!
        end=$(( $(date +%s) + 120 ))
        runs=0
        while [ $(date +%s) -lt $end ]; do $A gc --min-age WINDOW > /dev/null; runs=$((runs + 1)); done
        touch $T/stop; wait $w1 $w2 $w3
        [ $runs -ge 3 ]
        # Without a window, runs delete the churner's garbage while the writers run.
        deleting=$($A audit --json | /usr/bin/python3 -c 'import json,sys; print(len([e for e in json.load(sys.stdin) if e["action"] == "gc" and e["detail"].startswith("condemned") and "deleted 0 " not in e["detail"]]))')
        [ WINDOW = 1h ] || [ $deleting -ge 1 ] || { echo "no gc run deleted anything" >&2; exit 1; }
        checked=0
        for f in $T/sums-*; do
          name=${f#$T/sums-}; session=${name%%-*}
          [ $session = s ] && view=$M/.aether/checkpoints/$name || view=$T/b/.aether/checkpoints/$name
          ( cd $view && sha256sum -c --quiet $f ) || { echo "checkpoint $name differs" >&2; exit 1; }
          checked=$((checked + 1))
        done
        [ $checked -ge 20 ]
        $A unmount $T/b > /dev/null
        $A verify --read-data > /dev/null
        """#.replacingOccurrences(of: "WINDOW", with: window), timeout: 900)
    }

    /// prune on a mounted session of 50 checkpoints, the oldest 40 two hours old: keep_last 5 and
    /// keep_within 1h keep the newest ten, keep_named a named one, a fork's base stays; the dry run
    /// lists what goes and why, the run removes exactly that, and gc then frees what only they held.
    @Test func pruneRemovesWhatTheRulesSayAndKeepsAForksBase() throws {
        try inMount(#"""
        for i in $(seq 50); do
          head -c 20000 /dev/urandom > f; echo $i > n
          if [ $i = 10 ]; then echo '{"message":"r","name":"release"}' > .aether/checkpoint; else echo "c$i" > .aether/checkpoint; fi
        done
        echo "f@cp-20" > .aether/fork
        sqlite3 $S/meta.db "UPDATE snapshots SET time = time - 7200 WHERE id IN (SELECT id FROM snapshots WHERE kind = 'checkpoint' AND session = (SELECT id FROM sessions WHERE name = 's') ORDER BY id LIMIT 40)"
        # No rule yet: nothing to do.
        $A prune --dry-run | has 'no retention rule'
        echo '{"retention": {"keep_last": 5, "keep_within": "1h"}}' > $T/policy.json; $A policy set $T/policy.json > /dev/null
        $A prune --dry-run > $T/dry
        [ $(grep -c '^would remove  checkpoint s@cp-' $T/dry) = 38 ] || { cat $T/dry >&2; exit 1; }
        has -F 'would remove  checkpoint s@cp-21  [keep_last,keep_within] made 2h ago, not among the newest 5 and older than 1h' < $T/dry
        has -F "keep  checkpoint s@cp-20  [base] session f's tree builds on it" < $T/dry
        has -F 'keep  checkpoint s@release  [keep_named]' < $T/dry
        has -F 'keep  checkpoint s@cp-41  [keep_within]' < $T/dry
        has -F 'keep  checkpoint s@cp-46  [keep_last]' < $T/dry
        [ $($A checkpoints s | grep -c .) -ge 50 ]
        before=$(du -sk $S/objects | cut -f1)
        $A prune --json > $T/run.json
        /usr/bin/python3 -c 'import json, sys
        dry = {l.split()[3] for l in open(sys.argv[1]) if l.startswith("would remove")}
        run = json.load(open(sys.argv[2]))
        gone = {i["session"] + "@" + i["checkpoint"] for i in run["items"] if i["action"] == "remove"}
        assert run["removed"] == 38 and gone == dry, (run["removed"], gone ^ dry)' $T/dry $T/run.json
        [ "$(ls .aether/checkpoints | sort | tr '\n' ' ')" = "cp-20 cp-41 cp-42 cp-43 cp-44 cp-45 cp-46 cp-47 cp-48 cp-49 cp-50 release " ]
        [ "$(cat .aether/checkpoints/cp-20/n)" = 20 ] && [ "$(cat .aether/checkpoints/release/n)" = 10 ]
        $A audit --json | has '"action":"prune"'
        [ "$($A prune --json | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["removed"])')" = 0 ]
        $A gc --min-age 0s > /dev/null
        after=$(du -sk $S/objects | cut -f1)
        [ $((before - after)) -ge 500 ] || { echo "gc freed $((before - after)) KiB" >&2; exit 1; }
        $A verify --read-data > /dev/null
        """#, timeout: 600)
    }

    /// What a crash leaves in a session's own files — a file in `reclaim/`, an upper file no row names,
    /// the directory of a session that is gone — gc finds (dry) and removes, and nothing else: the
    /// session's unsaved file and checkpoint read back after a remount.
    @Test func gcReclaimsWhatACrashLeftInSessionsFiles() throws {
        try inMount(#"""
        head -c 1000000 /dev/urandom > kept; echo one > .aether/checkpoint
        head -c 500000 /dev/urandom > unsaved; cp unsaved $T/unsaved
        id=$($A session show s --json | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
        cd $T; $A unmount $M > /dev/null
        up=$S/sessions/$id/upper
        head -c 300000 /dev/urandom > $up/reclaim/77; head -c 300000 /dev/urandom > $up/987654321
        mkdir -p $S/sessions/4242/upper/spare; head -c 300000 /dev/urandom > $S/sessions/4242/upper/5; touch $S/sessions/4242/upper/spare/1 $S/sessions/4242.log
        files() { /usr/bin/python3 -c 'import json,sys; r = json.load(sys.stdin); print(r["session_files"], r["session_file_bytes"] >= 900000)'; }
        [ "$($A gc --dry-run --json | files)" = "4 True" ]
        [ -e $up/987654321 ] && [ -e $up/reclaim/77 ] && [ -e $S/sessions/4242/upper/5 ]
        [ "$($A gc --json | files)" = "4 True" ]
        [ ! -e $up/987654321 ] && [ ! -e $up/reclaim/77 ] && [ ! -e $S/sessions/4242 ] && [ ! -e $S/sessions/4242.log ]
        [ "$($A gc --json | files)" = "0 False" ]
        $A mount --session s $M > /dev/null
        cmp $M/unsaved $T/unsaved && cmp $M/kept $M/.aether/checkpoints/cp-1/kept
        """#)
    }

    /// SIGKILL in the delete phase: the store verifies, and a second gc finishes the work.
    @Test func gcKilledWhileDeletingLeavesAStoreThatVerifies() throws {
        try inMount(#"""
        cd $T
        mkdir many; for i in $(seq 3000); do head -c 300 /dev/urandom > many/f$i; done
        tar -cf many.tar -C many .
        $A import many.tar --session garbage > /dev/null
        $A session delete garbage > /dev/null
        echo keep > $M/kept; echo '{"message":"kept","name":"kept"}' > $M/.aether/checkpoint
        $A gc --min-age 0s > gc.out 2>&1 & pid=$!
        # Wait until the condemned objects start to go, then kill it.
        condemned() { if [ -d $S/objects/condemned ]; then find $S/objects/condemned -type f | wc -l; else echo 0; fi; }
        peak=0; killed=no
        for i in $(seq 3000); do
          n=$(condemned)
          if [ $n -gt $peak ]; then peak=$n; elif [ $peak -gt 100 ] && [ $n -lt $peak ]; then kill -9 $pid; killed=yes; break; fi
          kill -0 $pid 2>/dev/null || break
        done
        wait $pid 2>/dev/null || true
        [ $killed = yes ] || { echo "gc ended before it could be killed (peak $peak)" >&2; exit 1; }
        left=$(condemned); [ $left -gt 0 ]
        $A verify --read-data > /dev/null
        [ "$(cat $M/.aether/checkpoints/kept/kept)" = keep ]
        sleep 0.5
        $A gc --min-age 0s --json | /usr/bin/python3 -c 'import json,sys; r = json.load(sys.stdin); assert r["deleted"] > 0, r'
        [ "$(condemned)" = 0 ]
        $A verify --read-data > /dev/null
        """#, timeout: 900)
    }
}
